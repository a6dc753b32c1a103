"""Persistent store of the desired state: JSON documents by kind and key.

Callers only see the `Store` protocol; `open_store()` picks the backend from a URL.

* SQLite (`sqlite:////path.db`, one controller): one table `(kind, key, value)` in WAL
  mode plus a `store_meta` table (the revision and the leadership generation); every
  write is committed before it returns, so a restart loses nothing acknowledged.
  `watch` is a no-op, `exclusive` a process-local lock, `try_lead` always succeeds.
* etcd (`etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, replicated controllers):
  controller/store/etcd.py.

Besides documents the protocol offers what replication needs: a revision that grows
with every write, a consistent snapshot, a watch of changes from a revision on, mutual
exclusion across replicas with fenced writes, and leader election (docs/architecture.md,
"Store").
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_STORE_URL = "sqlite:////var/lib/daolinet/daolinet.db"


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


def dump_document(value: dict[str, Any]) -> str:
    """The stored text of a document: JSON, sorted keys, compact (both backends)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Store(Protocol):
    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The document stored under (kind, key), or None."""
        ...

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Every document of one kind, ordered by key."""
        ...

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        """Store a document; with create=True raise StoreConflict if the key exists."""
        ...

    def delete(self, kind: str, key: str) -> bool:
        """Remove a document; True if it existed."""
        ...

    def close(self) -> None: ...

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
        self, store: SqliteStore, value: dict[str, Any], ttl: float, generation: int,
        key: str,
    ) -> None:
        self.generation = generation
        self.value = value
        self.key = key
        self._store = store
        self._state = store._state
        self._ttl = ttl
        self._expires = time.monotonic() + ttl
        self._lost = False

    def alive(self) -> bool:
        """Under the file's lead_lock."""
        if not self._lost and (
            self._state.leaderships.get(self.key) is not self
            or self._store._db is None
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


class SqliteStore:
    """Store backed by one SQLite file (WAL mode, one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit; explicit transactions where needed.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._state = _file_state(str(path))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path} is closed")
        return self._db

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT value FROM documents WHERE kind = ? AND key = ?", (kind, key))
                .fetchone()
            )
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def list(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT value FROM documents WHERE kind = ? ORDER BY key", (kind,))
                .fetchall()
            )
        return [json.loads(r[0]) for r in rows]

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction (under the lock) that also bumps the revision; rolled back
        if the body raises."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("UPDATE store_meta SET value = value + 1 WHERE name = 'revision'")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        text = dump_document(value)
        with self._write() as db:
            if create:
                try:
                    db.execute(
                        "INSERT INTO documents (kind, key, value) VALUES (?, ?, ?)",
                        (kind, key, text),
                    )
                except sqlite3.IntegrityError as exc:
                    raise StoreConflict(kind, key) from exc
            else:
                db.execute(
                    "INSERT INTO documents (kind, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                    (kind, key, text),
                )

    def delete(self, kind: str, key: str) -> bool:
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key))
                deleted = cur.rowcount > 0
                if deleted:  # like etcd: deleting nothing is not a change
                    db.execute("UPDATE store_meta SET value = value + 1 WHERE name = 'revision'")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return deleted

    def _meta(self, db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT value FROM store_meta WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def snapshot(self) -> tuple[int, Documents]:
        with self._lock:
            db = self._conn()
            # One connection behind the lock: nothing writes between the two reads.
            revision = self._meta(db, "revision")
            rows = db.execute("SELECT kind, value FROM documents ORDER BY kind, key").fetchall()
        docs: Documents = {}
        for kind, text in rows:
            docs.setdefault(kind, []).append(json.loads(text))
        return revision, docs

    def revision(self) -> int:
        with self._lock:
            return self._meta(self._conn(), "revision")

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
        if ttl <= 0:
            raise ValueError(f"leadership ttl must be positive, not {ttl!r}")
        check_lead_key(key)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("UPDATE store_meta SET value = value + 1 WHERE name = 'generation'")
                generation = self._meta(db, "generation")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        # A copy through JSON, as etcd would store it.
        leadership = _SqliteLeadership(
            self, json.loads(dump_document(value)), ttl, generation, key
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
            return json.loads(dump_document(current.value)), current.generation

    def members(self) -> dict[str, tuple[dict[str, Any], int]]:
        self._conn()
        with self._state.lead_lock:
            live = [(k, x) for k, x in self._state.leaderships.items()
                    if k.startswith("member/") and x.alive()]
            return {k.removeprefix("member/"): (json.loads(dump_document(x.value)),
                                                x.generation) for k, x in live}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"


def open_store(url: str) -> Store:
    """Open the store named by a URL.

    * SQLite: `sqlite:///` followed by an absolute path, so
      `sqlite:////var/lib/daolinet/daolinet.db` (four slashes), or `sqlite:///:memory:`
      for a throw-away store.
    * etcd: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (default prefix "daolinet"),
      e.g. `etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/daolinet`.  Opening
      does not connect: the first request does.
    """
    prefix = "sqlite:///"
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "etcd":
        # Imported here: store_etcd imports this module.
        from controller.store.etcd import EtcdStore

        return EtcdStore.from_url(url)
    if scheme != "sqlite":
        raise ValueError(
            f"unsupported store URL {url!r}: expected sqlite:////absolute/path.db"
            " or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"
        )
    if not url.startswith(prefix):
        raise ValueError(f"malformed store URL {url!r}: expected sqlite:////absolute/path.db")
    path = url[len(prefix) :]
    if path == ":memory:":
        return SqliteStore(path)
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ValueError(
            f"store URL {url!r} needs an absolute file path: sqlite:////absolute/path.db"
        )
    return SqliteStore(path)
