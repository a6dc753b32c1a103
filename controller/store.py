"""Persistent store of the desired state: JSON documents by kind and key.

Callers only see the `Store` protocol, so a replicated backend (etcd) can be added
later behind `open_store()` without touching them.  The SQLite backend keeps one
table `(kind, key, value)` in WAL mode; every write is committed before it returns,
so a restart loses nothing that was acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
import threading
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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


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
        self._db.execute(_SCHEMA)

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

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        with self._lock:
            db = self._conn()
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
            cur = self._conn().execute(
                "DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key)
            )
            return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"


def open_store(url: str) -> Store:
    """Open the store named by a URL.

    Only SQLite for now: `sqlite:///` followed by an absolute path, so
    `sqlite:////var/lib/daolinet/daolinet.db` (four slashes), or
    `sqlite:///:memory:` for a throw-away store.
    """
    prefix = "sqlite:///"
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme != "sqlite":
        raise ValueError(
            f"unsupported store URL {url!r}: only sqlite:////absolute/path.db is supported"
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
