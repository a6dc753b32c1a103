"""The etcd store on a real etcd (the session's shared 1-member cluster,
tests/etcdcluster.py, a fresh prefix per test): first the backend-generic suite of
tests/unit/store/test_store.py again (its tests that take `backend`, which the unit layer runs on
SQLite), then what only etcd has: watch, fencing, election, paged snapshots.
Availability with a 3-member cluster: test_store_etcd.py."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from controller.store.base import Store, StoreEvent, StoreUnavailable
from controller.store.etcd.store import EtcdStore
from tests.unit.store import test_store
from tests.unit.store.test_store import Collector
from tests.unit.storebackends import (
    INTEGRATION_BACKENDS,
    Backend,
    backend_suite,
    etcd_raw,
    open_backend,
)

globals().update(backend_suite(test_store))


@pytest.fixture(params=INTEGRATION_BACKENDS)
def backend(request, tmp_path: Path):
    with open_backend(request, tmp_path) as b:
        yield b


@pytest.fixture
def etcd_backend(request, tmp_path: Path):
    with open_backend(request, tmp_path, "etcd") as b:
        yield b


@pytest.fixture
def estore(etcd_backend: Backend) -> EtcdStore:
    s = etcd_backend.open()
    assert isinstance(s, EtcdStore)
    return s


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Expect:
    """Writes and the events they must bring: each event's revision lies after the
    revision read just before its write and at or before the one read just after
    (other clients of the shared cluster may raise etcd's revision meanwhile)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.items: list[tuple[str, str, dict | None, int, int]] = []

    def __call__(self, kind: str, key: str, value: dict | None, write) -> None:
        before = self.store.revision()
        write()
        self.items.append((kind, key, value, before, self.store.revision()))

    def check(self, events: list[StoreEvent]) -> None:
        assert [(e.kind, e.key, e.value) for e in events] == [i[:3] for i in self.items]
        for event, (*_, before, after) in zip(events, self.items, strict=True):
            assert before < event.revision <= after
        assert [e.revision for e in events] == sorted({e.revision for e in events})


# --- watch ---------------------------------------------------------------------------------


def test_watch_delivers_changes_after_a_revision_in_order(estore: EtcdStore) -> None:
    estore.put("network", "old", {"v": 0})
    after = estore.revision()
    got = Collector()
    estore.watch(after, got)
    expect = Expect(estore)
    expect("network", "web", {"v": 1}, lambda: estore.put("network", "web", {"v": 1}))
    expect("host", "h1", {"v": 2}, lambda: estore.put("host", "h1", {"v": 2}, create=True))
    expect("network", "web", {"v": 3}, lambda: estore.put("network", "web", {"v": 3}))
    expect("network", "old", None, lambda: estore.delete("network", "old"))
    assert not estore.delete("network", "old")  # nothing deleted: no event
    with estore.exclusive():  # fenced writes are document changes like any other
        expect("group", "g", {"v": 4}, lambda: estore.put("group", "g", {"v": 4}))
    # the lock and the leader are not documents
    lead = estore.try_lead({"name": "x"}, 5)
    assert lead is not None
    lead.resign()
    expect("network", "last", {"v": 5}, lambda: estore.put("network", "last", {"v": 5}))
    expect.check(got.wait_for(len(expect.items)))
    assert all(len(call) == 1 for call in got.calls)  # one revision per call
    time.sleep(0.1)
    assert len(got.events) == len(expect.items)  # nothing more


def test_watch_from_the_past_replays_history_and_nothing_before(estore: EtcdStore) -> None:
    estore.put("k", "a", {"n": 1})
    ra = estore.revision()  # a is at or before ra
    expect = Expect(estore)
    expect("k", "b", {"n": 2}, lambda: estore.put("k", "b", {"n": 2}))
    expect("k", "a", None, lambda: estore.delete("k", "a"))
    got = Collector()
    estore.watch(ra, got)  # history: b and the delete of a, not a
    expect.check(got.wait_for(2))
    later = Collector()
    estore.watch(estore.revision(), later)  # everything so far is at or before it
    expect = Expect(estore)
    expect("k", "c", {"n": 3}, lambda: estore.put("k", "c", {"n": 3}))
    expect.check(later.wait_for(1))
    time.sleep(0.1)
    assert len(got.events) == 3 and len(later.events) == 1


def test_watch_hands_one_transaction_in_one_call(estore: EtcdStore, etcd_backend: Backend) -> None:
    got = Collector()
    estore.watch(estore.revision(), got)
    docs = f"{etcd_backend.prefix}/docs"
    assert etcd_backend.cluster is not None
    body = etcd_raw(
        etcd_backend.cluster,
        "/kv/txn",
        {
            "compare": [],
            "success": [
                {"request_put": {"key": b64(f"{docs}/k/a"), "value": b64('{"n":1}')}},
                {"request_put": {"key": b64(f"{docs}/k/b"), "value": b64('{"n":2}')}},
                # outside the documents: not reported
                {"request_put": {"key": b64(f"{etcd_backend.prefix}/other"), "value": b64("x")}},
            ],
        },
    )
    rev = int(body["header"]["revision"])
    estore.put("k", "c", {"n": 3})
    got.wait_for(3)
    assert len(got.calls) == 2
    assert got.calls[0] == [
        StoreEvent("k", "a", {"n": 1}, rev),
        StoreEvent("k", "b", {"n": 2}, rev),
    ]
    [c] = got.calls[1]
    assert (c.kind, c.key, c.value) == ("k", "c", {"n": 3}) and c.revision > rev


def test_watch_outlives_a_failing_callback_and_stops_at_close(etcd_backend: Backend) -> None:
    s = etcd_backend.open()
    calls: list[int] = []

    def callback(events: list[StoreEvent]) -> None:
        calls.append(events[0].revision)
        if len(calls) == 1:
            raise RuntimeError("boom")

    s.watch(s.revision(), callback)
    s.put("k", "a", {})
    s.put("k", "b", {})
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 2
    s.close()
    other = etcd_backend.open()
    other.put("k", "c", {})
    time.sleep(0.2)
    assert len(calls) == 2  # closed: no more calls


def test_watch_only_sees_its_own_prefix(etcd_backend: Backend, estore: EtcdStore) -> None:
    assert etcd_backend.cluster is not None
    neighbour = EtcdStore.from_url(etcd_backend.cluster.url(etcd_backend.prefix + "x"),
                                   tls=etcd_backend.cluster.client_tls)
    try:
        got = Collector()
        estore.watch(estore.revision(), got)
        neighbour.put("k", "a", {"mine": False})
        estore.put("k", "a", {"mine": True})
        assert [e.value for e in got.wait_for(1)] == [{"mine": True}]
        assert estore.list("k") == [{"mine": True}]
    finally:
        neighbour.close()


# --- fencing -------------------------------------------------------------------------------


def test_lost_lock_fences_writes(estore: EtcdStore, etcd_backend: Backend) -> None:
    assert etcd_backend.cluster is not None
    estore.put("k", "kept", {"v": 1})
    rev_before = None
    with estore.exclusive():
        estore.put("k", "a", {"v": 1})
        # another client deletes the lock (as its lease expiring in a partition would)
        etcd_raw(etcd_backend.cluster, "/kv/deleterange",
                 {"key": b64(f"{etcd_backend.prefix}/lock")})
        rev_before = estore.revision()
        with pytest.raises(StoreUnavailable, match="lost exclusive access to the store"):
            estore.put("k", "b", {"v": 2})
        with pytest.raises(StoreUnavailable, match="lost exclusive access"):
            estore.put("k", "c", {"v": 3}, create=True)
        with pytest.raises(StoreUnavailable, match="lost exclusive access"):
            estore.put("k", "a", {"v": 4}, create=True)  # lost beats conflict
        with pytest.raises(StoreUnavailable, match="lost exclusive access"):
            estore.delete("k", "kept")
        assert estore.revision() == rev_before  # nothing was written
    assert estore.get("k", "a") == {"v": 1}
    assert estore.get("k", "b") is None
    assert estore.get("k", "c") is None
    assert estore.get("k", "kept") == {"v": 1}
    with estore.exclusive(timeout=1):  # can be won again
        estore.put("k", "b", {"v": 5})
    assert estore.get("k", "b") == {"v": 5}


def test_revoked_lease_fences_writes_then_a_new_one_is_granted(
    estore: EtcdStore, etcd_backend: Backend
) -> None:
    assert etcd_backend.cluster is not None
    other = etcd_backend.open()
    with estore.exclusive():
        lease = estore.session.current
        assert lease is not None
        etcd_raw(etcd_backend.cluster, "/kv/lease/revoke", {"ID": lease})
        with other.exclusive(timeout=1):  # the lock went with the lease
            other.put("k", "theirs", {})
        with pytest.raises(StoreUnavailable, match="lost exclusive access"):
            estore.put("k", "mine", {})
    assert estore.get("k", "mine") is None
    with estore.exclusive(timeout=2):
        estore.put("k", "mine", {})
    assert estore.session.current not in (None, lease)
    assert estore.get("k", "mine") == {}


def test_lock_of_a_dead_replica_expires(estore: EtcdStore, etcd_backend: Backend) -> None:
    assert etcd_backend.cluster is not None
    # a replica took the lock with a 2 s lease (etcd's minimum here), then died
    lease = etcd_raw(etcd_backend.cluster, "/lease/grant", {"TTL": 2})["ID"]
    etcd_raw(
        etcd_backend.cluster,
        "/kv/put",
        {
            "key": b64(f"{etcd_backend.prefix}/lock"),
            "value": b64('{"owner":"dead"}'),
            "lease": lease,
        },
    )
    started = time.monotonic()
    with (
        pytest.raises(StoreUnavailable, match=r"within 0.2 s \(held by dead\)"),
        estore.exclusive(timeout=0.2),
    ):
        pass  # pragma: no cover
    with estore.exclusive(timeout=6):
        waited = time.monotonic() - started
    assert 1.0 < waited < 4.5


# --- leader election -----------------------------------------------------------------------


def test_etcd_one_leader_at_a_time(etcd_backend: Backend) -> None:
    a, b = etcd_backend.open(), etcd_backend.open()
    first = a.try_lead({"name": "a"}, 5)
    assert first is not None
    assert b.try_lead({"name": "b"}, 5) is None
    assert a.try_lead({"name": "a again"}, 5) is None  # also from the same replica
    assert b.leader() == ({"name": "a"}, first.generation)
    first.resign()
    second = b.try_lead({"name": "b"}, 5)
    assert second is not None and second.generation > first.generation
    assert a.leader() == ({"name": "b"}, second.generation)
    assert first.refresh() is False
    assert second.refresh() is True
    second.resign()  # leave no lease to expire under a later test


def test_etcd_revoked_leadership_is_lost(estore: EtcdStore, etcd_backend: Backend) -> None:
    assert etcd_backend.cluster is not None
    lead = estore.try_lead({"name": "a"}, 5)
    assert lead is not None
    etcd_raw(etcd_backend.cluster, "/kv/lease/revoke", {"ID": lead.lease})
    assert lead.refresh() is False
    assert estore.leader() is None
    again = estore.try_lead({"name": "a"}, 5)
    assert again is not None and again.generation > lead.generation
    again.resign()


def test_etcd_leader_key_replaced_is_lost(estore: EtcdStore, etcd_backend: Backend) -> None:
    assert etcd_backend.cluster is not None
    lead = estore.try_lead({"name": "a"}, 5)
    assert lead is not None
    # someone deletes the key and another replica wins: the lease alone is not enough
    etcd_raw(
        etcd_backend.cluster,
        "/kv/deleterange",
        {"key": b64(f"{etcd_backend.prefix}/leader")},
    )
    other = etcd_backend.open().try_lead({"name": "b"}, 5)
    assert other is not None
    assert lead.refresh() is False
    assert other.refresh() is True
    other.resign()
    lead.resign()


# --- snapshot ------------------------------------------------------------------------------


def test_etcd_snapshot_pages_are_read_at_one_revision(
    estore: EtcdStore, etcd_backend: Backend
) -> None:
    estore.client.page_size = 4
    for i in range(10):
        estore.put("k", f"{i:02d}", {"i": i})
    rev0 = estore.revision()
    writer = etcd_backend.open()
    real_call = estore.client.call
    pages = []

    def call(path, payload, **kw):
        reply = real_call(path, payload, **kw)
        if path == "/kv/range" and "limit" in payload:
            pages.append(payload.get("revision"))
            if len(pages) == 1:  # a write between the first and the second page
                writer.put("k", "05a", {"i": "new"})
                writer.delete("k", "09")
        return reply

    estore.client.call = call  # type: ignore[method-assign]
    rev, docs = estore.snapshot()
    assert rev == rev0
    assert [d["i"] for d in docs["k"]] == list(range(10))
    assert pages == [None, rev0, rev0]
    estore.client.call = real_call  # type: ignore[method-assign]
    assert [d["i"] for d in estore.list("k")] == [0, 1, 2, 3, 4, 5, "new", 6, 7, 8]
