"""`Store.transaction()`: the writes of one change, committed together or not at all.

A change of the desired state often writes several documents (deleting a network
drops its rules and rewrites the groups that list it).  Written one by one, a crash
between two writes leaves a half change in the store: a group naming a deleted network,
which a new network of the same name then silently joins.  So a change buffers its
writes here, per thread, and the backend commits them at the end of the outermost
transaction() as one unit: one SQLite transaction, one etcd txn (fenced by the
exclusive lock when held).  If the body raises, nothing is written.

Inside a transaction `get` sees the buffered writes (read your own writes); `put(...,
create=True)` checks at once that the key is free (the change learns of the conflict
where it made it) and the commit checks it again.  Several writes of one key collapse
into the last one (an etcd txn may not name a key twice).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from controller.store.base import StoreConflict, copy_document


@dataclass
class Write:
    """The last write of one document in a batch: value None deletes it."""

    kind: str
    key: str
    value: dict[str, Any] | None
    create: bool = False  # a put(create=True): the key must be absent before the batch


@dataclass
class Batch:
    """The buffered writes of one thread's transaction, in first-write order."""

    writes: dict[tuple[str, str], Write] = field(default_factory=dict)
    depth: int = 1

    def pending(self, kind: str, key: str) -> Write | None:
        return self.writes.get((kind, key))

    def put(self, kind: str, key: str, value: dict[str, Any], create: bool) -> None:
        earlier = self.writes.get((kind, key))
        if earlier is not None:
            create = create or earlier.create
        self.writes[(kind, key)] = Write(kind, key, value, create)

    def delete(self, kind: str, key: str) -> None:
        self.writes[(kind, key)] = Write(kind, key, None)


class Batches:
    """The open batch of each thread of one store object, and the transaction() that
    opens it: `commit` (the backend's) runs once, at the end of the outermost one."""

    def __init__(self, commit: Callable[[Sequence[Write]], None]) -> None:
        self._commit = commit
        self._tls = threading.local()

    def current(self) -> Batch | None:
        batch: Batch | None = getattr(self._tls, "batch", None)
        return batch

    @contextmanager
    def transaction(self) -> Iterator[None]:
        batch = self.current()
        if batch is not None:  # nested: part of the outer transaction
            batch.depth += 1
            try:
                yield
            finally:
                batch.depth -= 1
            return
        batch = Batch()
        self._tls.batch = batch
        try:
            yield
        finally:
            self._tls.batch = None
        if batch.writes:
            self._commit(list(batch.writes.values()))

    def get(
        self, kind: str, key: str, read: Callable[[], dict[str, Any] | None]
    ) -> tuple[bool, dict[str, Any] | None]:
        """(True, the buffered value) if this thread's batch wrote (kind, key);
        (False, read()) else (also outside a transaction)."""
        batch = self.current()
        write = batch.pending(kind, key) if batch is not None else None
        if write is not None:
            return True, write.value
        return False, read()

    def put(
        self,
        kind: str,
        key: str,
        value: dict[str, Any],
        create: bool,
        read: Callable[[], dict[str, Any] | None],
    ) -> bool:
        """Buffer a put if this thread is in a transaction (True), checking a create
        against the committed and buffered state; False outside one."""
        batch = self.current()
        if batch is None:
            return False
        if create and self.get(kind, key, read)[1] is not None:
            raise StoreConflict(kind, key)
        batch.put(kind, key, copy_document(value), create)  # the caller may change it
        return True

    def delete(
        self, kind: str, key: str, read: Callable[[], dict[str, Any] | None]
    ) -> bool | None:
        """Buffer a delete if this thread is in a transaction: whether the document
        exists now (committed or buffered); None outside one."""
        batch = self.current()
        if batch is None:
            return None
        existed = self.get(kind, key, read)[1] is not None
        batch.delete(kind, key)
        return existed
