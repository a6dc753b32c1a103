"""The store and the index in step: how every change of the inventory is made.

Every change is checked against the current state, written to the store, mirrored
into the in-memory `DesiredIndex` the core reads, and then announced through
`on_change`.  Its store writes are one `Store.transaction()`, committed before the
index publishes the change: a crash never leaves the index (and the switches) ahead
of what a restart would load, nor the store with half a change (docs/architecture.md,
"Atomic changes"); if the commit fails, the index drops the change too.

Changes are serialised by one lock, and each is published in the index as one
version (`DesiredIndex.batch()`): the core never sees half a change, such as a rule
added but the rules after it not yet shifted.  The announcement happens after that
lock is released (the callback may read the inventory or take its own locks), but a second,
re-entrant lock keeps announcements in the order the changes were made.

With replicas (docs/architecture.md, "Replicas") the store's watch brings the changes
of the others, which go through the same locks and announcements.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from controller.desired.errors import Conflict, CorruptDocument
from controller.desired.events import Change
from controller.desired.index import DesiredIndex
from controller.desired.replication import META, apply_document, load_index, resync_index
from controller.store.base import Store, StoreConflict, StoreError, StoreEvent, StoreUnavailable

log = logging.getLogger(__name__)

SYNC_MARK = "sync"  # key of kind META: a replica's catch-up mark (see StoreSync._catch_up)
# How long a replica waits for its store watch to catch up before a change.
CATCH_UP_TIMEOUT = 5.0
# How long a replica whose watch lost history waits between attempts to reload.
RESYNC_RETRY_SECONDS = 1.0


class StoreSync:
    """The index loaded from `store` and kept in step with it; `change()` runs one change."""

    def __init__(
        self,
        store: Store,
        on_change: Callable[[Change], None],
        *,
        replicated: bool = False,
        index: DesiredIndex | None = None,
        watchers: Mapping[str, Callable[[dict[str, Any] | None], None]] | None = None,
    ) -> None:
        """`replicated`: other controller replicas write the same store (etcd); their
        changes arrive through the store's watch (docs/architecture.md, "Replicas").
        `index`: the index to fill (made first by controller/main.py, so that the
        runtime reading it exists before the inventory that tells it of changes).
        `watchers`: documents that are no desired state but which replicas share
        through the store (the switch assignment, controller/cluster/masters.py):
        kind -> callback, for every write, this replica's own included."""
        self.store = store
        self.on_change = on_change
        self.index = index if index is not None else DesiredIndex()
        self.replicated = replicated
        self._lock = threading.Lock()  # serialises changes
        self._announce = threading.RLock()  # keeps announcements in change order
        # Replication: the newest store revision this replica wrote (its own writes
        # come back through the watch and are skipped), and the catch-up marks seen.
        self._own_high = 0
        self._marks = threading.Condition()
        self._mark_seen: object = None
        self._mark_serial = 0
        self._replica_id = uuid.uuid4().hex
        self._watch_error: str | None = None
        self.watchers = dict(watchers or {})
        revision = load_index(store, self.index)
        if replicated:
            store.watch(revision, self._on_store_events, self.watch_lost)

    # --- replication (docs/architecture.md, "Replicas") -------------------------------
    def _on_store_events(self, events: list[StoreEvent]) -> None:
        """The store watch: another replica's changes, in revision order (the events
        of one revision - one change, one store transaction - in one call)."""
        documents: list[StoreEvent] = []
        for ev in events:
            watcher = self.watchers.get(ev.kind)
            if watcher is not None:
                try:
                    watcher(ev.value)
                except Exception:  # the watch must go on
                    log.exception("handling a %s document failed", ev.kind)
            elif ev.kind == META:
                if ev.key == SYNC_MARK and ev.value is not None:
                    with self._marks:
                        self._mark_seen = ev.value.get("mark")
                        self._marks.notify_all()
            else:
                documents.append(ev)
        if not documents:
            return
        with self._announce:
            changes: list[Change] = []
            with self._lock:
                if documents[-1].revision <= self._own_high:
                    return  # this replica's own change, already in the index
                with self.index.batch():  # one change, one published version
                    for ev in documents:
                        try:
                            changes += apply_document(self.index, ev.kind, ev.key, ev.value)
                        except CorruptDocument as exc:
                            log.error("%s", exc)
            for change in changes:
                self._announce_one(change)

    def watch_lost(self, exc: Exception) -> None:
        """The watch cannot go on without a gap (etcd compacted the history it needs):
        changes through this replica are refused (503) until its index is reloaded from
        a snapshot and the watch resumes after it (`resync`), tried every
        RESYNC_RETRY_SECONDS while the store is unavailable.  Only a store that refuses
        otherwise (closed) leaves the replica refusing until it restarts."""
        self._watch_error = str(exc)
        log.warning("the store watch lost its history (%s): reloading from a snapshot", exc)
        while True:
            try:
                self.resync()
                return
            except StoreUnavailable as again:
                log.warning("reloading from a snapshot: %s; trying again", again)
                time.sleep(RESYNC_RETRY_SECONDS)
            except StoreError as final:
                log.error("the store watch stopped (%s): changes through this replica are "
                          "refused until it restarts", final)
                return

    def resync(self) -> None:
        """Bring the index in line with a snapshot of the store, announcing the
        difference as the watch would have, then watch again from its revision."""
        revision, docs = self.store.snapshot()
        with self._announce:
            with self._lock:
                with self.index.batch():
                    changes = resync_index(self.index, docs)
                self._own_high = max(self._own_high, revision)
            for kind, watcher in self.watchers.items():  # shared documents, as they are
                for value in docs.get(kind, []):
                    try:
                        watcher(value)
                    except Exception:
                        log.exception("handling a %s document failed", kind)
            for change in changes:
                self._announce_one(change)
        self.store.watch(revision, self._on_store_events, self.watch_lost)
        self._watch_error = None
        log.warning("the desired state was reloaded from a snapshot at store revision %d "
                    "(%d changes); the watch goes on from there", revision, len(changes))

    def _catch_up(self) -> None:
        """Make sure the index holds every change made before this one (inside the
        store's exclusive section): write a mark and wait until the watch, which
        delivers in revision order, has brought it back."""
        if self._watch_error is not None:
            raise StoreUnavailable(
                f"this replica lost the store watch ({self._watch_error}) and is "
                "reloading the desired state; try again"
            )
        self._mark_serial += 1
        mark = f"{self._replica_id}/{self._mark_serial}"
        self.store.put(META, SYNC_MARK, {"mark": mark})
        with self._marks:
            if not self._marks.wait_for(lambda: self._mark_seen == mark, CATCH_UP_TIMEOUT):
                raise StoreUnavailable(
                    f"the store watch did not catch up within {CATCH_UP_TIMEOUT:g}s"
                )

    # --- changes ---------------------------------------------------------------------
    @contextmanager
    def change(self) -> Iterator[list[Change]]:
        """Run one change under the locks; announce what it appended, in order.

        The store's exclusive section serialises it with every other replica; with
        replicas, the index first catches up with what they wrote, so the change is
        validated against the latest state (writes are linearizable).
        """
        events: list[Change] = []
        with self.store.exclusive():
            if self.replicated:
                self._catch_up()
            with self._announce:
                with self._lock:
                    try:
                        # One change: one published version of the index, one store
                        # transaction (committed before the version is published; if it
                        # fails, neither changes).
                        with self.index.batch(), self.store.transaction():
                            yield events
                    except StoreConflict as exc:  # a key created meanwhile, outside
                        raise Conflict(str(exc)) from exc  # the exclusive section
                    finally:
                        if self.replicated:
                            self._own_high = self.store.revision()
                for event in events:
                    self._announce_one(event)

    def _announce_one(self, event: Change) -> None:
        try:
            self.on_change(event)
        except Exception:
            log.exception("on_change failed for %s", type(event).__name__)
