"""What is SQLite's alone (the suite of both backends: test_store.py): files that
survive a reopen, a database of before revisions, the watch that is a no-op, an election
that always succeeds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from controller.store.base import StoreConflict
from controller.store.sqlite import SqliteStore
from tests.unit.store.test_store import Collector


def test_sqlite_revision_and_generation_survive_reopen(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "r.db")
    s.put("k", "a", {})
    s.put("k", "b", {})
    assert not s.delete("k", "missing")  # deleting nothing is not a change (as in etcd)
    with pytest.raises(StoreConflict):
        s.put("k", "a", {}, create=True)  # nor is a refused create
    assert s.revision() == 2
    lead = s.try_lead({"name": "c1"}, 10)
    assert lead is not None
    gen = lead.generation
    s.close()
    s = SqliteStore(tmp_path / "r.db")
    try:
        assert s.revision() == 2
        assert s.leader() is None  # a leadership is of the process that won it
        again = s.try_lead({"name": "c1"}, 10)
        assert again is not None and again.generation == gen + 1
    finally:
        s.close()


def test_sqlite_database_of_before_revisions_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE documents (kind TEXT NOT NULL, key TEXT NOT NULL,"
        " value TEXT NOT NULL, PRIMARY KEY (kind, key))"
    )
    db.execute("""INSERT INTO documents VALUES ('host', 'h1', '{"name":"h1"}')""")
    db.commit()
    db.close()
    s = SqliteStore(path)
    try:
        assert s.snapshot() == (0, {"host": [{"name": "h1"}]})
        s.put("host", "h2", {"name": "h2"})
        assert s.revision() == 1
    finally:
        s.close()


def test_sqlite_watch_is_a_no_op(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "w.db")
    got = Collector()
    s.watch(0, got)
    s.put("k", "a", {})
    s.delete("k", "a")
    time.sleep(0.05)
    assert got.calls == []
    s.close()


def test_sqlite_try_lead_always_succeeds(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "l.db")
    first = s.try_lead({"name": "a"}, 5)
    second = s.try_lead({"name": "b"}, 5)
    assert first is not None and second is not None
    assert second.generation == first.generation + 1
    assert first.refresh() is False  # superseded
    assert s.leader() == ({"name": "b"}, second.generation)
    s.close()
    assert second.refresh() is False


def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    s = SqliteStore(path)
    for i in range(50):
        s.put("endpoint", f"e{i:02d}", {"i": i})
    s.delete("endpoint", "e07")
    s.close()
    s2 = SqliteStore(path)
    try:
        docs = s2.list("endpoint")
        assert len(docs) == 49
        assert {"i": 7} not in docs
        assert s2.get("endpoint", "e49") == {"i": 49}
    finally:
        s2.close()


def test_wal_mode_and_parent_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "d.db"
    s = SqliteStore(path)
    s.put("k", "v", {})
    assert path.exists()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    s.close()
