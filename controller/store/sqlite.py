"""The SQLite backend of the store (`sqlite:////path.db`, one controller).

One table `(kind, key, value)` in WAL mode plus a `store_meta` table (the revision and
the leadership generation); every write is committed before it returns (the writes of
a `transaction()` together, in one SQLite transaction), so a restart loses nothing
acknowledged and finds no half change.  `watch` is a no-op, `exclusive` a process-local lock,
`try_lead` always succeeds.

SQLite's own failures (`sqlite3.OperationalError`: the disk is full, the database is
read-only or locked, an I/O error) are `StoreUnavailable` with SQLite's message, such
as "database or disk is full": the API answers 503 naming the cause, the transaction
is rolled back (nothing of the change is written) and reads go on being served.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from controller.store.base import (
    Documents,
    Items,
    Leadership,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    WatchCallback,
    check_lead,
    copy_document,
    dump_document,
    load_document,
)
from controller.store.batch import Batches, Write

log = logging.getLogger(__name__)

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS documents (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
""",
    # revision: +1 at every write; generation: +1 at every try_lead.
    """
CREATE TABLE IF NOT EXISTS store_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
)
""",
    "INSERT OR IGNORE INTO store_meta (name, value) VALUES ('revision', 0), ('generation', 0)",
)


class _FileState:
    """What the SqliteStore objects of one database file share in this process: the
    exclusive() lock and the current leadership (a ":memory:" store has its own)."""

    def __init__(self) -> None:
        self.exclusive = threading.RLock()
        self.lead_lock = threading.Lock()
        self.leaderships: dict[str, _SqliteLeadership] = {}  # key -> the current one


_FILES: dict[str, _FileState] = {}
_FILES_GUARD = threading.Lock()


def _file_state(path: str) -> _FileState:
    if path == ":memory:":
        return _FileState()
    key = str(Path(path).resolve())
    with _FILES_GUARD:
        return _FILES.setdefault(key, _FileState())


class _SqliteLeadership:
    """A leadership of a SqliteStore: lives until resigned, superseded by a newer
    try_lead of the same store, closed, or `ttl` seconds without a refresh."""

    def __init__(
        self,
        state: _FileState,
        store_open: Callable[[], bool],
        value: dict[str, Any],
        ttl: float,
        generation: int,
        key: str,
    ) -> None:
        self.generation = generation
        self.value = value
        self.key = key
        self._state = state
        self._store_open = store_open  # False once the store that won it is closed
        self._ttl = ttl
        self._expires = time.monotonic() + ttl
        self._lost = False

    def alive(self) -> bool:
        """Under the file's lead_lock."""
        if not self._lost and (
            self._state.leaderships.get(self.key) is not self
            or not self._store_open()
            or time.monotonic() > self._expires
        ):
            self._lost = True
        return not self._lost

    def refresh(self) -> bool:
        with self._state.lead_lock:
            if not self.alive():
                return False
            self._expires = time.monotonic() + self._ttl
            return True

    def resign(self) -> None:
        with self._state.lead_lock:
            self._lost = True
            if self._state.leaderships.get(self.key) is self:
                del self._state.leaderships[self.key]

    def __repr__(self) -> str:
        return f"<SqliteStore leadership generation={self.generation}>"


def _meta(db: sqlite3.Connection, name: str) -> int:
    """A counter of store_meta: "revision" or "generation"."""
    row = db.execute("SELECT value FROM store_meta WHERE name = ?", (name,)).fetchone()
    return int(row[0])


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """SQLite's failures as StoreUnavailable, with its message ("database or disk is
    full", "attempt to write a readonly database"): one line for the 503."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        log.error("SQLite store: %s", exc)
        raise StoreUnavailable(str(exc)) from exc


class SqliteStore:
    """Store backed by one SQLite file (WAL mode, one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit; explicit transactions where needed.
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot open the SQLite store {path}: {exc}") from exc
        self._state = _file_state(str(path))
        self._batches = Batches(self._commit)

    def _is_open(self) -> bool:
        return self._db is not None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path} is closed")
        return self._db

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._batches.get(kind, key, lambda: self._get(kind, key))[1]

    def _get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock, _unavailable():
            row = (
                self._conn()
                .execute("SELECT value FROM documents WHERE kind = ? AND key = ?", (kind, key))
                .fetchone()
            )
        return None if row is None else load_document(row[0])

    def list(self, kind: str) -> list[dict[str, Any]]:
        with self._lock, _unavailable():
            rows = (
                self._conn()
                .execute("SELECT value FROM documents WHERE kind = ? ORDER BY key", (kind,))
                .fetchall()
            )
        return [load_document(r[0]) for r in rows]

    def items(self, kind: str) -> Items:
        with self._lock, _unavailable():
            rows = (
                self._conn()
                .execute("SELECT key, value FROM documents WHERE kind = ? ORDER BY key", (kind,))
                .fetchall()
            )
        return [(key, load_document(text)) for key, text in rows]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction, under the lock; rolled back if the body or the commit
        raises (a full disk may refuse the COMMIT itself)."""
        with self._lock, _unavailable():
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str) -> int:
        """+1 to a counter of store_meta (in the caller's transaction): its new value."""
        db.execute("UPDATE store_meta SET value = value + 1 WHERE name = ?", (name,))
        return _meta(db, name)

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        self._conn()
        if self._batches.put(kind, key, value, create, lambda: self._get(kind, key)):
            return
        self._commit([Write(kind, key, value, create)])

    def delete(self, kind: str, key: str) -> bool:
        self._conn()
        existed = self._batches.delete(kind, key, lambda: self._get(kind, key))
        if existed is not None:
            return existed
        with self._transaction() as db:
            cur = db.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key))
            deleted = cur.rowcount > 0
            if deleted:  # like etcd: deleting nothing is not a change
                self._bump(db, "revision")
        return deleted

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self._batches.transaction()

    def _commit(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in one SQLite transaction, one revision (all or nothing)."""
        with self._transaction() as db:
            for w in writes:
                if w.value is None:
                    db.execute(
                        "DELETE FROM documents WHERE kind = ? AND key = ?", (w.kind, w.key)
                    )
                    continue
                text = dump_document(w.value)
                if w.create:
                    try:
                        db.execute(
                            "INSERT INTO documents (kind, key, value) VALUES (?, ?, ?)",
                            (w.kind, w.key, text),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise StoreConflict(w.kind, w.key) from exc
                else:
                    db.execute(
                        "INSERT INTO documents (kind, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                        (w.kind, w.key, text),
                    )
            self._bump(db, "revision")

    def snapshot(self) -> tuple[int, Documents]:
        with self._lock, _unavailable():
            db = self._conn()
            # One connection behind the lock: nothing writes between the two reads.
            revision = _meta(db, "revision")
            rows = db.execute("SELECT kind, value FROM documents ORDER BY kind, key").fetchall()
        docs: Documents = {}
        for kind, text in rows:
            docs.setdefault(kind, []).append(load_document(text))
        return revision, docs

    def revision(self) -> int:
        with self._lock, _unavailable():
            return _meta(self._conn(), "revision")

    def watch(
        self,
        after: int,
        callback: WatchCallback,
        on_error: Callable[[StoreError], None] | None = None,
    ) -> None:
        """No-op: one process is the only writer, so there is nothing to learn."""
        self._conn()

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 5.0) -> Iterator[None]:
        self._conn()
        if not self._state.exclusive.acquire(timeout=max(timeout, 0.0)):
            raise StoreUnavailable(
                f"no exclusive access to the store {self.path} within {timeout:g} s"
            )
        try:
            yield
        finally:
            self._state.exclusive.release()

    def try_lead(
        self, value: dict[str, Any], ttl: float, key: str = "leader"
    ) -> Leadership | None:
        check_lead(key, ttl)
        with self._transaction() as db:
            generation = self._bump(db, "generation")
        leadership = _SqliteLeadership(
            self._state, self._is_open, copy_document(value), ttl, generation, key
        )
        with self._state.lead_lock:
            self._state.leaderships[key] = leadership
        return leadership

    def end_leadership(self, generation: int, key: str = "leader") -> bool:
        return False  # one controller: no other replica ends its leadership

    def leader(self, key: str = "leader") -> tuple[dict[str, Any], int] | None:
        self._conn()
        with self._state.lead_lock:
            current = self._state.leaderships.get(key)
            if current is None or not current.alive():
                return None
            return copy_document(current.value), current.generation

    def members(self) -> dict[str, tuple[dict[str, Any], int]]:
        self._conn()
        with self._state.lead_lock:
            live = [(k, x) for k, x in self._state.leaderships.items()
                    if k.startswith("member/") and x.alive()]
            return {
                k.removeprefix("member/"): (copy_document(x.value), x.generation)
                for k, x in live
            }

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"
