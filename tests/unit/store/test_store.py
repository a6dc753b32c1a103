"""The store: one suite for both backends, run here on SQLite (the tests that take the
`backend` fixture; tests/integration/test_store_on_etcd.py runs them again on a real etcd,
with what only etcd has: watch, fencing, election details).  What is SQLite's alone:
test_sqlite.py; the parsing of store URLs: test_url.py.  Availability with a 3-member
cluster: tests/integration/test_store_etcd.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controller.store.base import (
    Store,
    StoreConflict,
    StoreError,
    StoreEvent,
    StoreUnavailable,
)
from controller.store.etcd.store import EtcdStore
from tests.unit.storebackends import UNIT_BACKENDS, Backend, open_backend


@pytest.fixture(params=UNIT_BACKENDS)


def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b


@pytest.fixture


def store(backend: Backend) -> Store:
    return backend.open()


class Collector:
    """A watch callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[list[StoreEvent]] = []
        self.cond = threading.Condition()

    def __call__(self, events: list[StoreEvent]) -> None:
        with self.cond:
            self.calls.append(list(events))
            self.cond.notify_all()

    @property
    def events(self) -> list[StoreEvent]:
        with self.cond:
            return [e for call in self.calls for e in call]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[StoreEvent]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(len(c) for c in self.calls) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
        return self.events


# --- documents (both backends) -----------------------------------------------------------


def test_is_a_store(store: Store) -> None:
    s: Store = store  # structural typing: both backends satisfy the protocol
    assert s.get("network", "x") is None


def test_put_get_list_delete(store: Store) -> None:
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


def test_put_overwrites_unless_create(store: Store) -> None:
    store.put("meta", "k", {"value": 1})
    store.put("meta", "k", {"value": 2})
    assert store.get("meta", "k") == {"value": 2}
    with pytest.raises(StoreConflict, match="meta 'k' already exists"):
        store.put("meta", "k", {"value": 3}, create=True)
    assert store.get("meta", "k") == {"value": 2}
    store.put("meta", "other", {"value": 4}, create=True)
    assert store.get("meta", "other") == {"value": 4}


def test_same_key_in_different_kinds(store: Store) -> None:
    store.put("a", "k", {"v": "a"}, create=True)
    store.put("b", "k", {"v": "b"}, create=True)
    assert store.get("a", "k") == {"v": "a"}
    assert store.get("b", "k") == {"v": "b"}
    store.put("ab", "k", {"v": "ab"})  # a kind that extends another's name
    assert store.list("a") == [{"v": "a"}]


def test_keys_order_bytewise_and_may_hold_any_text(store: Store) -> None:
    keys = ["b", "a|b", "a", "a/b", "Z", "ü", "10", "9", ""]
    for k in keys:
        store.put("k", k, {"k": k})
    assert [d["k"] for d in store.list("k")] == sorted(keys, key=lambda k: k.encode())
    assert store.get("k", "a/b") == {"k": "a/b"}
    assert store.get("k", "") == {"k": ""}


def test_nested_json_round_trip(store: Store) -> None:
    doc = {"s": "ü", "n": 2**63, "f": 1.5, "l": [1, None, True], "d": {"x": {}}}
    store.put("k", "1", doc)
    assert store.get("k", "1") == doc


def test_another_store_object_sees_the_same_documents(backend: Backend) -> None:
    first = backend.open()
    for i in range(50):
        first.put("endpoint", f"e{i:02d}", {"i": i})
    first.delete("endpoint", "e07")
    first.close()
    second = backend.open()
    docs = second.list("endpoint")
    assert len(docs) == 49
    assert {"i": 7} not in docs
    assert second.get("endpoint", "e49") == {"i": 49}


def test_closed_store_raises(backend: Backend) -> None:
    s = backend.open()
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.get("k", "v")


def test_thread_safety(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                store.put("t", f"{n}-{i}", {"n": n, "i": i})
                assert store.get("t", f"{n}-{i}") == {"n": n, "i": i}
                if i % 10 == 0:
                    store.list("t")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.list("t")) == 160


def test_create_is_exclusive_across_threads_and_replicas(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    wins: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            stores[n % 2].put("race", "key", {"n": n}, create=True)
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
    assert stores[0].get("race", "key") == {"n": wins[0]}


# --- snapshot and revision (both backends) -----------------------------------------------


def test_snapshot_holds_every_document_by_kind(store: Store) -> None:
    rev0, docs0 = store.snapshot()
    assert docs0 == {}
    store.put("network", "web", {"name": "web"})
    store.put("network", "db", {"name": "db"})
    store.put("host", "h1", {"name": "h1"})
    store.put("host", "h0", {"name": "h0"})
    store.delete("host", "h0")
    rev, docs = store.snapshot()
    assert docs == {
        "host": [{"name": "h1"}],
        "network": [{"name": "db"}, {"name": "web"}],
    }
    assert rev > rev0
    assert rev == store.revision()  # nothing written since
    store.put("host", "h2", {"name": "h2"})
    rev2, docs2 = store.snapshot()
    assert rev2 > rev
    assert [d["name"] for d in docs2["host"]] == ["h1", "h2"]


def test_snapshot_of_many_documents_is_one_read(store: Store) -> None:
    if isinstance(store, EtcdStore):
        store.client.page_size = 7  # several pages, all read at the revision of the first
    for i in range(30):
        store.put("b", f"{i:02d}", {"i": i})
    for i in range(3):
        store.put("a", f"{i}", {"i": i})
    rev, docs = store.snapshot()
    assert [d["i"] for d in docs["a"]] == [0, 1, 2]
    assert [d["i"] for d in docs["b"]] == list(range(30))
    assert [d["i"] for d in store.list("b")] == list(range(30))
    assert rev == store.revision()


def test_revision_grows_with_every_write(store: Store) -> None:
    seen = [store.revision()]

    def grew() -> None:
        now = store.revision()
        assert now > seen[-1]
        seen.append(now)

    store.put("k", "a", {"v": 1})
    grew()
    store.put("k", "a", {"v": 1})  # the same value again is still a write
    grew()
    store.put("k", "b", {"v": 2}, create=True)
    grew()
    assert store.delete("k", "a")
    grew()
    with store.exclusive():
        store.put("k", "c", {})
    grew()
    assert store.revision() == seen[-1]  # reads change nothing


# --- exclusive (both backends) ----------------------------------------------------------


def test_exclusive_excludes_another_replica(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    inside = threading.Event()
    leave = threading.Event()
    order: list[str] = []

    def holder() -> None:
        with a.exclusive():
            order.append("a in")
            inside.set()
            leave.wait(5)
            order.append("a out")

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(5)
    started = time.monotonic()
    with (
        pytest.raises(StoreUnavailable, match="no exclusive access to the store"),
        b.exclusive(timeout=0.3),
    ):
        pass  # pragma: no cover
    assert 0.25 < time.monotonic() - started < 2.0
    threading.Timer(0.2, leave.set).start()
    with b.exclusive(timeout=5):
        order.append("b in")
    t.join()
    assert order == ["a in", "a out", "b in"]


def test_exclusive_serialises_read_modify_write(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    stores[0].put("counter", "c", {"n": 0})
    errors: list[BaseException] = []

    def worker(s: Store) -> None:
        try:
            for _ in range(8):
                with s.exclusive(timeout=10):
                    doc = s.get("counter", "c")
                    assert doc is not None
                    s.put("counter", "c", {"n": doc["n"] + 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(stores[n % 2],)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert stores[1].get("counter", "c") == {"n": 32}


def test_exclusive_is_reentrant_and_released_on_error(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    with pytest.raises(RuntimeError, match="inner"), a.exclusive():
        with a.exclusive():
            a.put("k", "a", {})
        a.put("k", "b", {})
        raise RuntimeError("inner")
    with b.exclusive(timeout=1):  # released
        assert b.get("k", "b") == {}


def test_exclusive_in_two_threads_of_one_object(store: Store) -> None:
    inside = threading.Event()
    leave = threading.Event()

    def holder() -> None:
        with store.exclusive():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(5)
    with pytest.raises(StoreUnavailable, match="no exclusive access"), store.exclusive(timeout=0.2):
        pass  # pragma: no cover
    leave.set()
    t.join()
    with store.exclusive(timeout=1):
        pass


# --- leader election (both backends) ----------------------------------------------------


def test_try_lead_records_the_leader(store: Store) -> None:
    assert store.leader() is None
    lead = store.try_lead({"name": "c1", "url": "http://10.0.0.1:8080"}, 5)
    assert lead is not None
    assert store.leader() == ({"name": "c1", "url": "http://10.0.0.1:8080"}, lead.generation)
    assert lead.refresh() is True
    lead.resign()
    lead.resign()  # idempotent
    assert lead.refresh() is False
    assert store.leader() is None


def test_generation_grows_with_every_leadership(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    gens = []
    for s in (a, b, a, a, b):
        lead = s.try_lead({"name": "x"}, 5)
        assert lead is not None
        gens.append(lead.generation)
        lead.resign()
    assert gens == sorted(gens) and len(set(gens)) == len(gens)


def test_leadership_lives_by_refresh_and_expires_without(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    ttl = 2.0 if backend.kind == "etcd" else 0.4  # etcd's minimum lease is 2 s here
    lead = a.try_lead({"name": "a"}, ttl)
    assert lead is not None
    started = time.monotonic()
    while time.monotonic() - started < ttl * 1.25:  # beyond its ttl, refreshed
        assert lead.refresh() is True
        time.sleep(ttl / 4)
    assert b.leader() == ({"name": "a"}, lead.generation)
    # no refresh: it ends by itself (etcd checks lease expiry every 500 ms)
    time.sleep(ttl + (0.6 if backend.kind == "etcd" else 0.1))
    assert a.leader() is None
    assert lead.refresh() is False
    assert lead.refresh() is False  # for good
    after = b.try_lead({"name": "b"}, ttl)
    assert after is not None and after.generation > lead.generation
    after.resign()


def test_memberships_are_leaderships_of_their_own_keys(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    ma = a.try_lead({"name": "a"}, 5, key="member/a")
    mb = b.try_lead({"name": "b"}, 5, key="member/b")
    assert ma is not None and mb is not None and mb.generation > ma.generation
    assert a.members() == {"a": ({"name": "a"}, ma.generation),
                           "b": ({"name": "b"}, mb.generation)}
    assert a.leader() is None  # the leader key is another key
    assert b.leader("member/a") == ({"name": "a"}, ma.generation)
    if backend.kind == "etcd":
        assert b.try_lead({"name": "a"}, 5, key="member/a") is None  # a is alive
        assert a.end_leadership(mb.generation - 1, key="member/b") is False  # not its
        assert a.end_leadership(mb.generation, key="member/b") is True
        assert mb.refresh() is False
    else:
        mb.resign()
    assert b.members() == {"a": ({"name": "a"}, ma.generation)}
    assert ma.refresh() is True
    ma.resign()
    assert a.members() == {}
    with pytest.raises(ValueError, match="not a leadership key"):
        a.try_lead({}, 5, key="docs/x")


def test_leadership_ttl_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        store.try_lead({}, 0)
