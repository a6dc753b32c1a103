"""Store.transaction(): the writes of one change commit together or not at all (on
SQLite here; tests/integration/test_atomic.py runs the same tests on a real etcd)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from controller.store.base import Store, StoreConflict
from tests.unit.storebackends import UNIT_BACKENDS, Backend, open_backend


@pytest.fixture(params=UNIT_BACKENDS)
def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def test_writes_of_a_transaction_commit_together_at_one_revision(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    store.put("network", "old", {"name": "old"})
    store.put("group", "g", {"networks": ["old"]})
    before = store.revision()
    with store.transaction():  # (on etcd, exclusive() would write the lock key too)
        assert store.delete("network", "old") is True
        store.put("group", "g", {"networks": []})
        store.put("rule", "r1", {"n": 1}, create=True)
        # Another replica (or a restart) sees none of it before the end.
        assert other.get("network", "old") == {"name": "old"}
        assert other.get("rule", "r1") is None
    assert other.get("network", "old") is None
    assert other.get("group", "g") == {"networks": []}
    assert other.get("rule", "r1") == {"n": 1}
    assert other.revision() == before + 1


def test_a_transaction_that_raises_writes_nothing(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    store.put("network", "old", {"name": "old"})
    store.put("group", "g", {"networks": ["old"]})
    before = other.snapshot()
    with pytest.raises(RuntimeError, match="midway"), store.transaction():
        store.delete("network", "old")
        store.put("group", "g", {"networks": []})
        raise RuntimeError("midway")
    assert other.snapshot() == before
    # The store object goes on working outside a transaction.
    store.put("network", "new", {"name": "new"})
    assert other.get("network", "new") == {"name": "new"}


def test_reads_inside_see_the_transactions_own_writes(store: Store) -> None:
    store.put("k", "a", {"v": 1})
    with store.transaction():
        store.put("k", "a", {"v": 2})
        assert store.get("k", "a") == {"v": 2}
        assert store.delete("k", "a") is True
        assert store.get("k", "a") is None
        assert store.delete("k", "a") is False
        store.put("k", "b", {"v": 3}, create=True)
        with pytest.raises(StoreConflict):  # taken by this very transaction
            store.put("k", "b", {"v": 4}, create=True)
    assert store.get("k", "a") is None
    assert store.get("k", "b") == {"v": 3}


def test_the_caller_may_change_a_value_after_put(store: Store) -> None:
    value = {"v": [1]}
    with store.transaction():
        store.put("k", "a", value)
        value["v"].append(2)
    assert store.get("k", "a") == {"v": [1]}


def test_create_of_a_taken_key_is_refused_at_once(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    other.put("network", "n", {"name": "n", "by": "other"})
    with pytest.raises(StoreConflict, match="network 'n' already exists"), store.transaction():
        store.put("group", "g", {"networks": ["n"]})
        store.put("network", "n", {"name": "n", "by": "me"}, create=True)
    assert store.get("group", "g") is None
    assert store.get("network", "n") == {"name": "n", "by": "other"}


def test_a_create_taken_before_the_commit_fails_the_whole_transaction(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    with pytest.raises(StoreConflict, match="network 'n' already exists"), store.transaction():
        store.put("network", "n", {"name": "n", "by": "me"}, create=True)
        store.put("group", "g", {"networks": ["n"]})
        other.put("network", "n", {"name": "n", "by": "other"})  # a race lost
    assert other.get("group", "g") is None
    assert other.get("network", "n") == {"name": "n", "by": "other"}


def test_nested_transactions_commit_with_the_outermost(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    with store.transaction():
        with store.transaction():
            store.put("k", "a", {"v": 1})
        assert other.get("k", "a") is None
        store.put("k", "b", {"v": 2})
    assert other.get("k", "a") == {"v": 1} and other.get("k", "b") == {"v": 2}


def test_a_transaction_belongs_to_its_thread(backend: Backend) -> None:
    store, other = backend.open(), backend.open()
    inside, done = threading.Event(), threading.Event()

    def writer() -> None:  # another thread of the same store object: not buffered
        inside.wait(5)
        store.put("k", "t", {"v": "thread"})
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    with store.transaction():
        store.put("k", "a", {"v": 1})
        inside.set()
        assert done.wait(5)
        assert other.get("k", "t") == {"v": "thread"}
        assert other.get("k", "a") is None
    t.join(5)
    assert other.get("k", "a") == {"v": 1}
