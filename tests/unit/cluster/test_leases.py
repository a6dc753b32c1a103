"""Lease: election rounds, stepping down, and the lease watchdog (a fake store)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from controller.cluster.leases import (
    Lease,
    openflow_targets,
    parse_openflow_target,
    replica_record,
    target_for,
)
from controller.settings import advertised
from controller.store.base import StoreUnavailable


class FakeLeadership:
    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.ok = True
        self.block = threading.Event()  # set: refresh hangs (an unreachable store)
        self.resigned = False

    def refresh(self) -> bool:
        if self.block.is_set():
            time.sleep(30)
        return self.ok

    def resign(self) -> None:
        self.resigned = True


class FakeStore:
    def __init__(self) -> None:
        self.free = True
        self.current: tuple[dict[str, Any], int] | None = None
        self.issued: list[FakeLeadership] = []
        self.down = False

    def try_lead(
        self, value: dict[str, Any], ttl: float, key: str = "leader"
    ) -> FakeLeadership | None:
        if self.down:
            raise StoreUnavailable("etcd: no quorum")
        if not self.free:
            return None
        lease = FakeLeadership(len(self.issued) + 10)
        self.issued.append(lease)
        self.current = (value, lease.generation)
        return lease

    def leader(self, key: str = "leader") -> tuple[dict[str, Any], int] | None:
        return self.current

    def end_leadership(self, generation: int, key: str = "leader") -> bool:
        return False


def make(store: FakeStore, ttl: float = 2.0) -> tuple[Lease, list[object]]:
    calls: list[object] = []
    replica = Lease(store, {"name": "c1", "api": "http://c1"}, ttl=ttl,  # type: ignore[arg-type]
                      on_elected=calls.append, on_deposed=lambda: calls.append("deposed"))
    return replica, calls


def test_a_follower_leads_once_the_store_lets_it() -> None:
    store = FakeStore()
    store.free = False
    store.current = ({"name": "c0", "api": "http://c0"}, 7)
    replica, calls = make(store)
    replica.step()
    assert not replica.held and calls == []
    assert replica.leader() == {"name": "c0", "api": "http://c0"}
    assert replica.generation == 7  # slave role requests carry the leader's generation
    store.free = True
    replica.step()
    assert replica.held and calls == [10] and replica.generation == 10
    assert replica.leader() == {"name": "c1", "api": "http://c1"}


def test_a_lost_leadership_steps_down_and_resigns() -> None:
    store = FakeStore()
    replica, calls = make(store)
    replica.step()
    store.issued[0].ok = False
    replica.step()
    assert not replica.held and calls == [10, "deposed"]
    assert store.issued[0].resigned


def test_an_unreachable_store_is_no_election() -> None:
    store = FakeStore()
    store.down = True
    replica, calls = make(store)
    replica.step()
    assert not replica.held and calls == []


def test_the_watchdog_steps_down_before_the_lease_can_expire() -> None:
    """A refresh stuck on an unreachable store must not keep the replica master: it
    steps down `margin` seconds before the lease could have expired in the store."""
    store = FakeStore()
    replica, calls = make(store, ttl=0.5)
    replica.start()
    try:
        deadline = time.monotonic() + 2
        while not replica.held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert replica.held
        store.free = False  # nobody else gets it: only the watchdog can end it
        store.issued[0].block.set()
        stuck = time.monotonic()
        while replica.held and time.monotonic() - stuck < 3:
            time.sleep(0.01)
        stepped = time.monotonic() - stuck
        assert not replica.held
        # valid until last refresh + ttl - margin: at most ttl - margin after it stuck
        assert stepped <= replica.ttl - replica.margin + 0.1, stepped
        time.sleep(0.2)
        assert calls.count("deposed") == 1
    finally:
        replica._stop.set()


def test_stop_resigns_so_another_replica_takes_over_at_once() -> None:
    store = FakeStore()
    replica, calls = make(store)
    replica.step()
    replica.stop()
    assert store.issued[0].resigned and calls == [10, "deposed"] and not replica.held


def test_a_standalone_controller_leads_until_it_stops(tmp_path) -> None:
    """With SQLite there is one controller: a refresh that never comes (a loaded host)
    must not depose it, since nobody could take the switches over."""
    from controller.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.db")
    calls: list[object] = []
    replica = Lease(store, {"name": "c"}, ttl=0.3, standalone=True,
                      on_elected=calls.append, on_deposed=lambda: calls.append("deposed"))
    try:
        replica.start()
        first = replica.generation
        assert replica.held and calls == [first]
        time.sleep(0.45)  # past ttl without a single refresh
        assert replica.held and calls == [first]
        replica.stop()
        assert not replica.held and calls == [first, "deposed"]
        again = Lease(store, {"name": "c"}, standalone=True, on_elected=calls.append)
        again.start()
        assert again.generation > first  # a restarted controller claims the switches anew
    finally:
        store.close()


# --- records and OpenFlow targets per site ----------------------------------------------


def test_a_record_without_a_remote_target_gives_its_one_target_to_every_site() -> None:
    record = replica_record("c1", "http://10.0.0.1:8080", "tcp:10.0.0.1:6653", site="a")
    assert record == {"name": "c1", "api": "http://10.0.0.1:8080",
                      "openflow": "tcp:10.0.0.1:6653", "site": "a",
                      "openflow_remote": "tcp:10.0.0.1:6653"}
    assert target_for(record, "a") == target_for(record, "b") == "tcp:10.0.0.1:6653"


def test_targets_per_site() -> None:
    records = [
        replica_record("c1", None, "tcp:10.0.0.1:6653", site="a",
                       openflow_remote="tcp:10.99.0.1:6653"),
        replica_record("c2", None, "tcp:10.0.0.2:6653"),  # no site: the same for all
        replica_record("c3", None, "tcp:10.1.0.3:6653", site="b",
                       openflow_remote="tcp:10.99.0.3:6653"),
        replica_record("c4", None, "tcp:10.1.0.3:6653", site="b",  # the same target twice
                       openflow_remote="tcp:10.99.0.3:6653"),
        replica_record("c5", None, None),  # nothing to connect to: left out
    ]
    assert openflow_targets(records, "a") == [
        "tcp:10.0.0.1:6653", "tcp:10.0.0.2:6653", "tcp:10.99.0.3:6653"]
    assert openflow_targets(records, "b") == [
        "tcp:10.0.0.2:6653", "tcp:10.1.0.3:6653", "tcp:10.99.0.1:6653"]
    assert openflow_targets(reversed(records), "b") == openflow_targets(records, "b")
    assert openflow_targets([], "a") == []


@pytest.mark.parametrize("value", ["tcp:10.0.0.1:6653", "tcp:[fd00::1]:6653",
                                   "tcp:198.18.0.1:1", "tcp:198.18.0.1:65535",
                                   "ssl:10.0.0.1:6653", "ssl:[fd00::1]:6653"])
def test_good_openflow_targets(value: str) -> None:
    assert parse_openflow_target(value) == value


@pytest.mark.parametrize("value", [
    "10.0.0.1:6653", "unix:10.0.0.1:6653", "tcp:10.0.0.1", "tcp:10.0.0.1:0",
    "tcp:10.0.0.1:65536", "tcp:10.0.0.1:x", "tcp:controller:6653", "tcp:fd00::1:6653",
    "tcp:[10.0.0.1]:6653", "tcp::6653", "tcp:10.0.0.256:6653", "ssl:controller:6653",
])
def test_bad_openflow_targets(value: str) -> None:
    with pytest.raises(ValueError, match="is not ssl:IP:PORT or tcp:IP:PORT"):
        parse_openflow_target(value)


@pytest.mark.parametrize(("value", "host", "scheme", "expected"), [
    (None, "10.0.0.1", "tcp:", "tcp:10.0.0.1:6653"),
    (None, "fd00::1", "tcp:", "tcp:[fd00::1]:6653"),  # OVS takes IPv6 in brackets
    (None, "fd00::1", "http://", "http://[fd00::1]:6653"),
    (None, "0.0.0.0", "tcp:", None),  # a wildcard: nobody can know it
    (None, "::", "tcp:", None),
    ("tcp:10.9.0.1:7000", "0.0.0.0", "tcp:", "tcp:10.9.0.1:7000"),
])
def test_advertised(value: str | None, host: str, scheme: str, expected: str | None) -> None:
    assert advertised(value, host, 6653, scheme) == expected
