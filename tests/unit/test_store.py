"""SqliteStore and open_store."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from controller.store import (
    DEFAULT_STORE_URL,
    SqliteStore,
    Store,
    StoreConflict,
    StoreError,
    open_store,
)


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "db" / "daolinet.db")
    yield s
    s.close()


def test_is_a_store(store: SqliteStore) -> None:
    s: Store = store  # structural typing: SqliteStore satisfies the protocol
    assert s.get("network", "x") is None


def test_put_get_list_delete(store: SqliteStore) -> None:
    store.put("network", "web", {"name": "web", "subnet": "10.1.0.0/24"})
    store.put("network", "db", {"name": "db", "subnet": "10.2.0.0/24"})
    store.put("host", "h1", {"name": "h1"})
    assert store.get("network", "web") == {"name": "web", "subnet": "10.1.0.0/24"}
    assert [d["name"] for d in store.list("network")] == ["db", "web"]  # ordered by key
    assert store.list("host") == [{"name": "h1"}]
    assert store.list("endpoint") == []
    assert store.delete("network", "web") is True
    assert store.delete("network", "web") is False
    assert store.get("network", "web") is None


def test_put_overwrites_unless_create(store: SqliteStore) -> None:
    store.put("meta", "k", {"value": 1})
    store.put("meta", "k", {"value": 2})
    assert store.get("meta", "k") == {"value": 2}
    with pytest.raises(StoreConflict, match="meta 'k' already exists"):
        store.put("meta", "k", {"value": 3}, create=True)
    assert store.get("meta", "k") == {"value": 2}
    store.put("meta", "other", {"value": 4}, create=True)
    assert store.get("meta", "other") == {"value": 4}


def test_same_key_in_different_kinds(store: SqliteStore) -> None:
    store.put("a", "k", {"v": "a"}, create=True)
    store.put("b", "k", {"v": "b"}, create=True)
    assert store.get("a", "k") == {"v": "a"}
    assert store.get("b", "k") == {"v": "b"}


def test_nested_json_round_trip(store: SqliteStore) -> None:
    doc = {"s": "ü", "n": 2**63, "f": 1.5, "l": [1, None, True], "d": {"x": {}}}
    store.put("k", "1", doc)
    assert store.get("k", "1") == doc


def test_survives_reopen(tmp_path: Path) -> None:
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


def test_closed_store_raises(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "c.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.get("k", "v")


def test_thread_safety(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(100):
                store.put("t", f"{n}-{i}", {"n": n, "i": i})
                assert store.get("t", f"{n}-{i}") == {"n": n, "i": i}
                store.list("t")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.list("t")) == 800


def test_create_is_exclusive_across_threads(store: SqliteStore) -> None:
    wins: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            store.put("race", "key", {"n": n}, create=True)
        except StoreConflict:
            return
        with lock:
            wins.append(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("race", "key") == {"n": wins[0]}


def test_open_store_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "o.db"
    s = open_store(f"sqlite:///{path}")
    assert isinstance(s, SqliteStore)
    s.put("k", "v", {"ok": True})
    s.close()
    assert path.exists()


def test_open_store_memory() -> None:
    s = open_store("sqlite:///:memory:")
    s.put("k", "v", {"ok": True})
    assert s.get("k", "v") == {"ok": True}
    s.close()


def test_default_url_is_absolute_sqlite() -> None:
    assert DEFAULT_STORE_URL == "sqlite:////var/lib/daolinet/daolinet.db"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("etcd://127.0.0.1:2379", "unsupported store URL"),
        ("postgres://x/y", "unsupported store URL"),
        ("/var/lib/daolinet/x.db", "unsupported store URL"),
        ("", "unsupported store URL"),
        ("sqlite://host/x.db", "malformed store URL"),
        ("sqlite:relative.db", "malformed store URL"),
        ("sqlite:///relative.db", "absolute file path"),
        ("sqlite:///", "absolute file path"),
        ("sqlite:////", "absolute file path"),
    ],
)
def test_open_store_rejects(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_store(url)
