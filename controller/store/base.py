"""The store's interface: the `Store` protocol, its errors and values, and the small
rules both backends share (leadership keys, the stored text of a document).

Callers only see the `Store` protocol; `open_store()` (controller/store/url.py) picks
the backend from a URL: SQLite (controller/store/sqlite.py, one controller) or etcd
(controller/store/etcd/, replicated controllers).

Besides documents the protocol offers what replication needs: a revision that grows
with every write, a consistent snapshot, a watch of changes from a revision on, mutual
exclusion across replicas with fenced writes, and leader election (docs/architecture.md,
"Store").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class StoreError(Exception):
    """Base class of store failures."""


class StoreConflict(StoreError):
    """put(..., create=True) found the key already present."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind = kind
        self.key = key


class StoreUnavailable(StoreError):
    """The store cannot serve now: no etcd member reachable, no quorum, or exclusivity
    lost.  The message is one clear line (it becomes an HTTP 503 detail), e.g.
    "etcd: no quorum (request timed out on 127.0.0.1:23791, 127.0.0.1:23792)"."""


@dataclass(frozen=True)
class StoreEvent:
    """One document change, as `Store.watch` delivers it."""

    kind: str
    key: str
    value: dict[str, Any] | None  # None: the document was deleted
    revision: int  # the store revision of this change


# Documents by kind, each list ordered by key (what snapshot() returns with its revision).
Documents = dict[str, list[dict[str, Any]]]
# (key, document) of every document of one kind, ordered by key (what items() returns).
Items = list[tuple[str, dict[str, Any]]]
# What watch() calls: the events of one revision.
WatchCallback = Callable[[list[StoreEvent]], None]


class Leadership(Protocol):
    """A leadership won by `Store.try_lead`."""

    # Strictly greater than any earlier leadership's generation of this store.
    generation: int

    def refresh(self) -> bool:
        """Keep it alive; False once it is lost (expired / revoked / store unreachable).
        Once False, always False: win a new one with try_lead."""
        ...

    def resign(self) -> None:
        """Give it up now (best effort, never raises)."""
        ...


LEAD_KEY = re.compile(r"^(leader|member/[A-Za-z0-9][A-Za-z0-9._-]{0,62})$")


def check_lead_key(key: str) -> str:
    """A leadership key: "leader", or "member/NAME" (a replica name); ValueError else."""
    if not LEAD_KEY.match(key):
        raise ValueError(f"{key!r} is not a leadership key (leader, or member/NAME)")
    return key


def check_lead(key: str, ttl: float) -> str:
    """The arguments of `Store.try_lead`: ValueError unless the ttl is positive and the
    key a leadership key; the key else."""
    if ttl <= 0:
        raise ValueError(f"leadership ttl must be positive, not {ttl!r}")
    return check_lead_key(key)


def dump_document(value: dict[str, Any]) -> str:
    """The stored text of a document: JSON, sorted keys, compact (both backends)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# The one field of what get/list/snapshot hand back for stored text that is no JSON
# object (written by hand, or cut short): the text itself, at most 1000 characters, so
# the reader can set it aside (controller/desired/replication.py) instead of failing on it.
UNREADABLE = "__unreadable__"


def load_document(text: str | bytes) -> dict[str, Any]:
    """A document from its stored text; {UNREADABLE: text} if that is no JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    shown = text.decode(errors="replace") if isinstance(text, bytes) else text
    return {UNREADABLE: shown[:1000]}


def copy_document(value: dict[str, Any]) -> dict[str, Any]:
    """A copy of a document through its stored text, as a store hands it back."""
    copy: dict[str, Any] = json.loads(dump_document(value))
    return copy


class Store(Protocol):
    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The document stored under (kind, key), or None."""
        ...

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Every document of one kind, ordered by key."""
        ...

    def items(self, kind: str) -> Items:
        """(key, document) of every document of one kind, ordered by key."""
        ...

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        """Store a document; with create=True raise StoreConflict if the key exists."""
        ...

    def delete(self, kind: str, key: str) -> bool:
        """Remove a document; True if it existed."""
        ...

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """The put/delete calls of this thread inside are buffered and committed
        together when the outermost transaction ends - one SQLite transaction, one
        etcd txn (fenced like any write inside exclusive()) - or not at all if the body
        raises (controller/store/batch.py).  get() inside sees them; put(create=True)
        raises StoreConflict at once if the key is taken; delete() says whether the
        document exists now.  The commit may raise StoreConflict or StoreUnavailable:
        then nothing was written."""
        ...

    def snapshot(self) -> tuple[int, Documents]:
        """Every document, by kind (each list ordered by key), and the revision they
        are as of (one consistent read).  Kinds without documents are absent."""
        ...

    def revision(self) -> int:
        """The store's current revision (a linearizable read). Every write makes it grow."""
        ...

    def watch(
        self,
        after: int,
        callback: WatchCallback,
        on_error: Callable[[StoreError], None] | None = None,
    ) -> None:
        """From one background thread, deliver every document change with revision >
        after, in revision order (the events of one revision - one etcd transaction - in
        one call), until close().  Survives member failures and reconnects by resuming
        after the last delivered revision (never skips or repeats a revision).  If it
        cannot go on without a gap (etcd compacted the history it needs) it stops and
        calls `on_error` once.  SQLite: no-op (one process)."""
        ...

    def exclusive(self, timeout: float = 5.0) -> AbstractContextManager[None]:
        """Mutual exclusion for one change, with every other thread of this process and
        every other process using the same store (all controller replicas).  Blocks up
        to `timeout`, then StoreUnavailable.  Reentrant in one thread.  put/delete done
        inside (by the same thread) are fenced: if exclusivity was lost meanwhile (the
        lock's lease expired during a partition, say) they raise StoreUnavailable and
        change nothing.  SQLite: a process-local lock."""
        ...

    def try_lead(
        self, value: dict[str, Any], ttl: float, key: str = "leader"
    ) -> Leadership | None:
        """Become the one holder of `key` ("leader": the leader of the store;
        "member/NAME": replica NAME's membership), recording `value` while it lasts;
        None if another live leadership holds it.  The leadership ends by itself `ttl`
        seconds after its last successful refresh.  SQLite: always succeeds (it
        supersedes an earlier leadership of the key in this process); the generation
        is a counter persisted in the database, +1 at each try_lead."""
        ...

    def end_leadership(self, generation: int, key: str = "leader") -> bool:
        """End the leadership of `key` with `generation` now, if it is the current one
        (another replica saw its holder's process die): True if it ended one.
        SQLite: False (one process, nobody else to end it)."""
        ...

    def leader(self, key: str = "leader") -> tuple[dict[str, Any], int] | None:
        """The current holder's value and generation of `key`, or None."""
        ...

    def members(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every live membership ("member/NAME" leaderships): NAME -> (value,
        generation)."""
        ...
