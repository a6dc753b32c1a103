"""Inventory: validation, allocation, persistence, index sync, announcements."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.desired.errors import Conflict, Invalid, InventoryError, NotFound
from controller.desired.events import (
    Change,
    EndpointAdded,
    EndpointRemoved,
    HostRegistered,
    HostRemoved,
    NetworkAdded,
    NetworkRemoved,
)
from controller.desired.inventory import Inventory
from controller.desired.models import mac_for_ip
from tests.unit.storebackends import UNIT_BACKENDS, Backend, open_backend

IP = ipaddress.IPv4Address


class Recorder:
    def __init__(self) -> None:
        self.events: list[Change] = []

    def __call__(self, change: Change) -> None:
        self.events.append(change)


@pytest.fixture(params=UNIT_BACKENDS)
def backend(request, tmp_path: Path):
    """The tests that take it run here on SQLite, and again on etcd (a fresh prefix of the
    session's cluster) in tests/integration/test_inventory_on_etcd.py; backend.open()
    opens the same data again, as a restarted controller would."""
    with open_backend(request, tmp_path) as b:
        yield b


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def inv(backend: Backend, rec: Recorder) -> Inventory:
    return Inventory(backend.open(), rec)  # closed by the backend fixture


@pytest.fixture
def lab(inv: Inventory) -> Inventory:
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12", site="east")
    inv.create_network("web", "10.1.0.0/24")
    return inv


# --- hosts ---------------------------------------------------------------------------


def test_register_host_assigns_increasing_dpids(inv: Inventory, rec: Recorder) -> None:
    h1 = inv.register_host("h1", "198.18.0.11")
    h2 = inv.register_host("h2", IP("198.18.0.12"), site="east")
    assert (h1.dpid, h2.dpid) == (1, 2)
    assert h2.site == "east"
    assert inv.host("h2") == h2
    assert [h.name for h in inv.hosts()] == ["h1", "h2"]
    assert inv.index.host_by_dpid(2) == h2
    assert inv.index.host_by_address(IP("198.18.0.11")) == h1
    assert rec.events == [HostRegistered(h1), HostRegistered(h2)]


def test_reregister_keeps_dpid_updates_address(inv: Inventory, rec: Recorder) -> None:
    h1 = inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    again = inv.register_host("h1", "198.18.0.21", site="west")
    assert again.dpid == h1.dpid
    assert again.address == IP("198.18.0.21")
    assert again.site == "west"
    assert inv.index.host_by_address(IP("198.18.0.11")) is None
    assert inv.index.host_by_address(IP("198.18.0.21")) == again
    assert inv.register_host("h3", "198.18.0.13").dpid == 3
    assert rec.events[2] == HostRegistered(again)


@pytest.mark.parametrize(
    ("name", "address", "site", "error", "match"),
    [
        ("h1", "198.18.0", "default", Invalid, "address '198.18.0' is not an IPv4 address"),
        ("h1", "fe80::1", "default", Invalid, "address 'fe80::1' is not an IPv4 address"),
        ("h1", "0.0.0.0", "default", Invalid, "address 0.0.0.0 is in the 'this network' range"),
        ("h1", "224.0.0.1", "default", Invalid, "address 224.0.0.1 is in the multicast range"),
        ("-bad", "198.18.0.1", "default", Invalid, "host name '-bad' is invalid"),
        ("", "198.18.0.1", "default", Invalid, "host name '' is invalid"),
        ("h1", "198.18.0.1", "a b", Invalid, "site 'a b' is invalid"),
        (
            "h9",
            "198.18.0.11",
            "default",
            Conflict,
            "address 198.18.0.11 is already registered by host h1",
        ),
    ],
)
def test_register_host_errors(inv, name, address, site, error, match) -> None:
    inv.register_host("h1", "198.18.0.11")
    with pytest.raises(error, match=match):
        inv.register_host(name, address, site)


def test_unknown_host(inv: Inventory) -> None:
    with pytest.raises(NotFound, match="host nope not found"):
        inv.host("nope")
    with pytest.raises(NotFound, match="host nope not found"):
        inv.remove_host("nope", force=True)


def test_a_host_with_containers_is_not_removed_unless_forced(
    backend: Backend, lab: Inventory, rec: Recorder
) -> None:
    w1 = lab.add_endpoint("w1", "web", "h1")
    w2 = lab.add_endpoint("w2", "web", "h1")
    w3 = lab.add_endpoint("w3", "web", "h2")
    rec.events.clear()
    with pytest.raises(Conflict, match=r"host h1 still has 2 container\(s\): w1, w2; remove "
                       r"them first, or force the removal"):
        lab.remove_host("h1")
    assert rec.events == [] and lab.endpoints(host="h1") == [w1, w2]
    h1 = lab.host("h1")
    host, gone = lab.remove_host("h1", force=True)
    assert host == h1 and gone == [w1, w2]
    # its endpoints go first, then the host (the core tears their connections down first)
    assert rec.events == [EndpointRemoved(w1), EndpointRemoved(w2), HostRemoved(h1)]
    assert [h.name for h in lab.hosts()] == ["h2"] and lab.endpoints() == [w3]
    assert lab.index.host_by_dpid(h1.dpid) is None
    assert lab.index.host_by_address(IP("198.18.0.11")) is None
    # a restart finds none of it
    again = Inventory(backend.open(), lambda _: None)
    assert [h.name for h in again.hosts()] == ["h2"] and again.endpoints() == [w3]


def test_a_host_registered_again_after_removal_is_a_new_host(lab: Inventory) -> None:
    old = lab.host("h1")
    lab.remove_host("h1")
    new = lab.register_host("h1", "198.18.0.11")
    assert new.dpid not in (old.dpid, lab.host("h2").dpid)
    assert new.registered_at >= old.registered_at
    assert lab.add_endpoint("w1", "web", "h1").host == "h1"


# --- networks ------------------------------------------------------------------------


def test_create_network_defaults(inv: Inventory, rec: Recorder) -> None:
    net = inv.create_network("web", "10.1.0.0/24")
    assert net.subnet == ipaddress.IPv4Network("10.1.0.0/24")
    assert net.gateway == IP("10.1.0.1")
    assert net.mtu == 1500
    assert len(net.id) == 32
    int(net.id, 16)
    assert inv.network("web") == net
    assert inv.index.network("web") == net
    assert rec.events == [NetworkAdded(net)]


@pytest.mark.parametrize(
    ("subnet", "gateway", "mtu", "want_gw", "want_mtu"),
    [
        ("10.1.0.0/30", None, None, "10.1.0.1", 1500),
        ("10.1.0.0/16", "10.1.255.254", 9000, "10.1.255.254", 9000),
        ("192.168.7.0/24", "192.168.7.100", 576, "192.168.7.100", 576),
        (" 172.16.0.0/12 ", "", None, "172.16.0.1", 1500),
        ("10.0.0.0/8", None, None, "10.0.0.1", 1500),
    ],
)
def test_create_network_ok(inv, subnet, gateway, mtu, want_gw, want_mtu) -> None:
    net = inv.create_network("n", subnet, gateway, mtu)
    assert net.gateway == IP(want_gw)
    assert net.mtu == want_mtu


@pytest.mark.parametrize(
    ("subnet", "gateway", "mtu", "error", "match"),
    [
        (
            "10.1.0.1/24",
            None,
            None,
            Invalid,
            r"subnet 10.1.0.1/24 has host bits set \(did you mean 10.1.0.0/24\?\)",
        ),
        ("10.1.0.0", None, None, Invalid, "subnet '10.1.0.0' is not an IPv4 CIDR"),
        ("10.1.0.0/33", None, None, Invalid, "subnet '10.1.0.0/33' is not an IPv4 CIDR"),
        ("10.1.0/24", None, None, Invalid, "is not an IPv4 CIDR"),
        ("300.1.0.0/24", None, None, Invalid, "is not an IPv4 CIDR"),
        ("fd00::/64", None, None, Invalid, "subnet 'fd00::/64' is not an IPv4 CIDR"),
        ("banana", None, None, Invalid, "subnet 'banana' is not an IPv4 CIDR"),
        ("", None, None, Invalid, "subnet '' is not an IPv4 CIDR"),
        ("10.1.0.0/31", None, None, Invalid, "subnet 10.1.0.0/31 leaves no room"),
        ("10.1.0.1/32", None, None, Invalid, "subnet 10.1.0.1/32 leaves no room"),
        (
            "10.9.0.0/24",
            "10.9.1.1",
            None,
            Invalid,
            "gateway 10.9.1.1 is outside subnet 10.9.0.0/24",
        ),
        ("10.9.0.0/24", "10.9.0.0", None, Invalid, "gateway 10.9.0.0 is the network address"),
        ("10.9.0.0/24", "10.9.0.255", None, Invalid, "gateway 10.9.0.255 is the broadcast address"),
        ("10.9.0.0/24", "10.9.0.x", None, Invalid, "gateway '10.9.0.x' is not an IPv4 address"),
        ("10.9.0.0/24", None, 575, Invalid, "mtu 575 is out of range 576-9000"),
        ("10.9.0.0/24", None, 9001, Invalid, "mtu 9001 is out of range"),
        # overlaps with "web" 10.1.0.0/24 created by the fixture
        (
            "10.1.0.0/24",
            None,
            None,
            Conflict,
            r"subnet 10.1.0.0/24 overlaps network web \(10.1.0.0/24\)",
        ),
        (
            "10.1.0.0/16",
            None,
            None,
            Conflict,
            r"subnet 10.1.0.0/16 overlaps network web \(10.1.0.0/24\)",
        ),
        ("10.1.0.128/25", None, None, Conflict, "subnet 10.1.0.128/25 overlaps network web"),
        ("10.1.0.4/30", None, None, Conflict, "overlaps network web"),
        ("0.0.0.0/0", None, None, Invalid, "subnet 0.0.0.0/0 is too large: use /8 or smaller"),
    ],
)
def test_create_network_errors(lab, subnet, gateway, mtu, error, match) -> None:
    with pytest.raises(error, match=match):
        lab.create_network("other", subnet, gateway, mtu)
    assert [n.name for n in lab.networks()] == ["web"]


def test_adjacent_subnets_do_not_overlap(lab: Inventory) -> None:
    lab.create_network("a", "10.1.1.0/24")
    lab.create_network("b", "10.0.255.0/24")
    assert [n.name for n in lab.networks()] == ["a", "b", "web"]


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("web", Conflict, "network web already exists"),
        ("bad name", Invalid, "network name 'bad name' is invalid"),
        ("x" * 64, Invalid, "network name 'x{64}' is invalid"),
    ],
)
def test_create_network_name_errors(lab, name, error, match) -> None:
    with pytest.raises(error, match=match):
        lab.create_network(name, "10.2.0.0/24")


def test_delete_network(lab: Inventory, rec: Recorder) -> None:
    ep = lab.add_endpoint("c1", "web", "h1")
    with pytest.raises(Conflict, match="network web still has 1 container"):
        lab.delete_network("web")
    lab.remove_endpoint(ep.id)
    net = lab.network("web")
    assert lab.delete_network("web") == net
    assert lab.networks() == []
    assert lab.index.network("web") is None
    assert rec.events[-1] == NetworkRemoved(net)
    with pytest.raises(NotFound, match="network web not found"):
        lab.delete_network("web")
    # the subnet is free again
    lab.create_network("web2", "10.1.0.0/24")


# --- endpoints -----------------------------------------------------------------------


def test_add_endpoint_allocates_lowest_free(lab: Inventory, rec: Recorder) -> None:
    e1 = lab.add_endpoint("c1", "web", "h1")
    e2 = lab.add_endpoint("c2", "web", "h2")
    assert (e1.ip, e2.ip) == (IP("10.1.0.2"), IP("10.1.0.3"))  # .1 is the gateway
    assert e1.mac == mac_for_ip(e1.ip) == "02:da:0a:01:00:02"
    assert e1.port == "dl" + e1.id[:12]
    assert len(e1.port) <= 15
    assert len(e1.id) == 32
    assert lab.index.endpoint_by_ip(IP("10.1.0.3")) == e2
    assert lab.index.endpoint_by_port("h1", e1.port) == e1
    assert lab.endpoint("c1") == e1
    assert lab.endpoint(e1.id) == e1
    assert [e.name for e in lab.endpoints(host="h2")] == ["c2"]
    assert [e.name for e in lab.endpoints()] == ["c1", "c2"]
    assert rec.events[-2:] == [EndpointAdded(e1), EndpointAdded(e2)]


def test_allocation_skips_custom_gateway_and_taken(inv: Inventory) -> None:
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("n", "10.5.0.0/29", gateway="10.5.0.2")
    inv.add_endpoint("fixed", "n", "h1", ip="10.5.0.3")
    got = [inv.add_endpoint(f"c{i}", "n", "h1").ip for i in range(4)]
    assert got == [IP("10.5.0.1"), IP("10.5.0.4"), IP("10.5.0.5"), IP("10.5.0.6")]
    with pytest.raises(Conflict, match=r"network n \(10.5.0.0/29\) has no free address left"):
        inv.add_endpoint("full", "n", "h1")


def test_reuse_after_removal(lab: Inventory, rec: Recorder) -> None:
    eps = [lab.add_endpoint(f"c{i}", "web", "h1") for i in range(4)]
    removed = lab.remove_endpoint("c1")
    assert removed == eps[1]
    assert rec.events[-1] == EndpointRemoved(removed)
    assert lab.index.endpoint_by_ip(removed.ip) is None
    assert lab.index.endpoint_by_port("h1", removed.port) is None
    again = lab.add_endpoint("c1", "web", "h2")
    assert again.ip == removed.ip
    assert again.mac == removed.mac
    assert again.id != removed.id
    # an explicitly requested address is reusable too
    lab.remove_endpoint(eps[3].id)
    assert lab.add_endpoint("x", "web", "h1", ip=str(eps[3].ip)).ip == eps[3].ip


def test_tiny_network_has_one_address(inv: Inventory) -> None:
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("p2p", "10.9.9.0/30")  # .1 gateway, .2 free, .3 broadcast
    assert inv.add_endpoint("only", "p2p", "h1").ip == IP("10.9.9.2")
    with pytest.raises(Conflict, match="has no free address"):
        inv.add_endpoint("second", "p2p", "h1")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"network": "nope"}, NotFound, "network nope not found"),
        ({"host": "nope"}, NotFound, "host nope not found"),
        ({"name": "taken"}, Conflict, "container taken already exists"),
        ({"name": "no/slash"}, Invalid, "container name 'no/slash' is invalid"),
        ({"ip": "10.2.0.5"}, Invalid, "ip 10.2.0.5 is outside subnet 10.1.0.0/24 of network web"),
        ({"ip": "10.1.0.0"}, Invalid, "ip 10.1.0.0 is the network address of subnet 10.1.0.0/24"),
        ({"ip": "10.1.0.255"}, Invalid, "ip 10.1.0.255 is the broadcast address"),
        ({"ip": "10.1.0.1"}, Invalid, "ip 10.1.0.1 is the gateway of network web"),
        ({"ip": "10.1.0.300"}, Invalid, "ip '10.1.0.300' is not an IPv4 address"),
        ({"ip": "10.1.0.2"}, Conflict, "ip 10.1.0.2 is already used by container taken"),
        (
            {"mac": "02:da:0a:01:00:02"},
            Conflict,
            "mac 02:da:0a:01:00:02 is already used by container taken",
        ),
        ({"mac": "02:DA:0A:01:00:02"}, Conflict, "mac 02:da:0a:01:00:02 is already used"),
        ({"mac": "zz:00:00:00:00:00"}, Invalid, "mac 'zz:00:00:00:00:00' is not a MAC address"),
        ({"mac": "02da0a010002"}, Invalid, "mac '02da0a010002' is not a MAC address"),
        ({"mac": "02:da:00:00:00:01"}, Invalid, "mac 02:da:00:00:00:01 is the virtual gateway MAC"),
        ({"mac": "01:00:5e:00:00:01"}, Invalid, "mac 01:00:5e:00:00:01 is a multicast address"),
        ({"mac": "00:00:00:00:00:00"}, Invalid, "all-zero"),
        # the default MAC of .3 was taken explicitly by "custom" below
        ({"ip": "10.1.0.3"}, Conflict, "mac 02:da:0a:01:00:03 is already used by container custom"),
    ],
)
def test_add_endpoint_errors(lab, rec, kwargs, error, match) -> None:
    lab.add_endpoint("taken", "web", "h1")  # 10.1.0.2
    lab.add_endpoint("custom", "web", "h1", ip="10.1.0.9", mac="02:da:0a:01:00:03")
    before = list(rec.events)
    args = {"name": "new", "network": "web", "host": "h1"} | kwargs
    with pytest.raises(error, match=match):
        lab.add_endpoint(**args)
    assert rec.events == before  # nothing announced
    assert [e.name for e in lab.endpoints()] == ["custom", "taken"]


def test_errors_are_inventory_errors() -> None:
    for cls, status in ((NotFound, 404), (Conflict, 409), (Invalid, 422)):
        err = cls("x 1 is bad")
        assert isinstance(err, InventoryError)
        assert err.status_code == status
        assert err.message == str(err) == "x 1 is bad"


def test_custom_mac_is_lowercased(lab: Inventory) -> None:
    ep = lab.add_endpoint("c", "web", "h1", mac="02:AB:CD:EF:00:11")
    assert ep.mac == "02:ab:cd:ef:00:11"


def test_unknown_endpoint(lab: Inventory) -> None:
    with pytest.raises(NotFound, match="container ghost not found"):
        lab.endpoint("ghost")
    with pytest.raises(NotFound, match="container ghost not found"):
        lab.remove_endpoint("ghost")


# --- persistence ---------------------------------------------------------------------


def test_persistence_across_reopen(backend: Backend) -> None:
    store = backend.open()
    inv = Inventory(store, lambda _c: None)
    h1 = inv.register_host("h1", "198.18.0.11")
    h2 = inv.register_host("h2", "198.18.0.12")
    web = inv.create_network("web", "10.1.0.0/24", mtu=1400)
    db_net = inv.create_network("db", "10.2.0.0/16", gateway="10.2.255.254")
    eps = [inv.add_endpoint(f"c{i}", "web", "h1") for i in range(3)]
    e_db = inv.add_endpoint("pg", "db", "h2", ip="10.2.0.10", mac="02:00:00:00:00:10")
    inv.remove_endpoint("c1")
    store.close()

    rec = Recorder()
    store2 = backend.open()
    inv2 = Inventory(store2, rec)
    try:
        assert rec.events == []  # loading announces nothing
        assert inv2.hosts() == [h1, h2]
        assert inv2.networks() == [db_net, web]
        assert inv2.endpoints() == [eps[0], eps[2], e_db]
        assert inv2.index.endpoint_by_ip(IP("10.2.0.10")) == e_db
        assert inv2.index.endpoint_by_port("h1", eps[2].port) == eps[2]
        assert inv2.index.host_by_dpid(2) == h2
        # state continues where it left off
        assert inv2.register_host("h3", "198.18.0.13").dpid == 3
        assert inv2.register_host("h1", "198.18.0.31").dpid == 1
        assert inv2.add_endpoint("c9", "web", "h2").ip == eps[1].ip
        with pytest.raises(Conflict, match="overlaps network db"):
            inv2.create_network("x", "10.2.3.0/24")
    finally:
        store2.close()


def test_dpid_never_reused_even_without_counter(backend: Backend) -> None:
    store = backend.open()
    inv = Inventory(store, lambda _c: None)
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    store.delete("meta", "next_dpid")
    store.close()
    store = backend.open()
    try:
        assert Inventory(store, lambda _c: None).register_host("h3", "198.18.0.13").dpid == 3
    finally:
        store.close()


def test_a_change_is_published_as_one_version(
    lab: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core reads one index version per handler: it never sees a change half made
    (here a rule inserted first while the rules after it are shifted one by one)."""
    lab.add_rule("network", "web", "allow", "cidr", "192.0.2.0/24")
    lab.add_rule("network", "web", "deny")
    before = lab.index.view()
    seen = []
    put = lab.store.put

    def spy(kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        put(kind, key, value, create=create)
        seen.append(lab.index.view())

    monkeypatch.setattr(lab.store, "put", spy)
    lab.add_rule("network", "web", "allow", position=0)
    assert len(seen) == 3 and all(view is before for view in seen)
    after = lab.index.view()
    assert [r.position for r in after.rules_for("network", "web")] == [0, 1, 2]
    assert [r.action for r in after.rules_for("network", "web")] == ["allow", "allow", "deny"]


# --- announcements -------------------------------------------------------------------


def test_store_written_before_announce(backend: Backend) -> None:
    store = backend.open()
    seen: list[bool] = []

    def on_change(change: Change) -> None:
        if isinstance(change, EndpointAdded):
            seen.append(store.get("endpoint", change.endpoint.id) is not None)
            seen.append(inv.index.endpoint(change.endpoint.id) == change.endpoint)
            # the callback may use the inventory, even change it
            assert inv.endpoint(change.endpoint.name) == change.endpoint

    inv = Inventory(store, on_change)
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("web", "10.1.0.0/24")
    inv.add_endpoint("c1", "web", "h1")
    assert seen == [True, True]
    store.close()


def test_failing_callback_does_not_undo_change(backend: Backend) -> None:
    def boom(_change: Change) -> None:
        raise RuntimeError("boom")

    lab = Inventory(backend.open(), boom)  # closed by the backend fixture
    lab.register_host("h1", "198.18.0.11")
    lab.create_network("web", "10.1.0.0/24")
    ep = lab.add_endpoint("c1", "web", "h1")
    assert lab.endpoint("c1") == ep


def test_concurrent_adds_get_distinct_addresses(lab: Inventory, rec: Recorder) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                lab.add_endpoint(f"w{n}-{i}", "web", "h1")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    eps = lab.endpoints()
    assert len(eps) == 80
    assert len({e.ip for e in eps}) == 80
    assert len({e.mac for e in eps}) == 80
    added = [c.endpoint for c in rec.events if isinstance(c, EndpointAdded)]
    assert len(added) == 80
    # announcements come in change order: addresses were allocated lowest-first
    assert [int(e.ip) for e in added] == sorted(int(e.ip) for e in added)
