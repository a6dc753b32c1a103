"""The inventory applies the rules of addresses (docs/security.md, "Validation"):
the bad inputs of issue 17 are refused naming the field, the checks that need the
state (host addresses against subnets, containers on host addresses) hold in both
orders, and a stored record that breaks a rule fails to decode with a clear error."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from controller.desired.errors import Conflict, CorruptDocument, Invalid
from controller.desired.index import DesiredIndex
from controller.desired.inventory import Inventory
from controller.desired.models import Endpoint, Host, Network
from controller.desired.replication import HOSTS, NETWORKS, decode, load_index
from controller.store.sqlite import SqliteStore

IP = ipaddress.IPv4Address
KEY = "k" * 42 + "A="


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    s = SqliteStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def inv(store: SqliteStore) -> Inventory:
    inv = Inventory(store, lambda _c: None)
    inv.register_host("h1", "198.18.0.11", site="a", wg_public_key=KEY,
                      wg_endpoint="198.18.0.11:51820", tunnel_address="100.64.0.1")
    inv.create_network("web", "10.1.0.0/24")
    return inv


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("0.0.0.0/0", "subnet 0.0.0.0/0 is too large"),
        ("127.0.0.0/8", "subnet 127.0.0.0/8 overlaps the loopback range"),
        ("224.0.0.0/4", "subnet 224.0.0.0/4 is too large"),
        ("224.0.0.0/8", "subnet 224.0.0.0/8 overlaps the multicast range"),
        ("169.254.0.0/16", "subnet 169.254.0.0/16 overlaps the link-local range"),
        ("240.0.0.0/8", "subnet 240.0.0.0/8 overlaps the reserved and broadcast range"),
    ],
)
def test_bad_subnets_are_invalid(inv: Inventory, subnet: str, message: str) -> None:
    with pytest.raises(Invalid, match=f"^{message}"):
        inv.create_network("n", subnet)
    assert [n.name for n in inv.networks()] == ["web"]


def test_after_a_refused_default_route_other_networks_are_still_made(inv: Inventory) -> None:
    """0.0.0.0/0 used to be accepted, after which every network create was an overlap."""
    with pytest.raises(Invalid):
        inv.create_network("all", "0.0.0.0/0")
    for name, subnet in (("a", "10.20.0.0/16"), ("b", "192.168.5.0/24"), ("c", "11.0.0.0/8")):
        assert str(inv.create_network(name, subnet).subnet) == subnet


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("198.18.0.0/24", "subnet 198.18.0.0/24 holds 198.18.0.11, the address of host h1"),
        ("198.18.0.8/29", "subnet 198.18.0.8/29 holds 198.18.0.11, the address of host h1"),
        ("100.64.0.0/10", "subnet 100.64.0.0/10 holds 100.64.0.1, the tunnel address of host h1"),
    ],
)
def test_a_subnet_holding_a_host_address_conflicts(
    inv: Inventory, subnet: str, message: str
) -> None:
    with pytest.raises(Conflict, match=f"^{message}$"):
        inv.create_network("n", subnet)
    inv.create_network("n", "198.18.1.0/24")  # next to the underlay: fine


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "10.1.0.7"}, "address 10.1.0.7 is inside subnet 10.1.0.0/24 of network web"),
        ({"tunnel_address": "10.1.0.7"},
         "tunnel_address 10.1.0.7 is inside subnet 10.1.0.0/24 of network web"),
        ({"address": "100.64.0.1"}, "address 100.64.0.1 is the tunnel address of host h1"),
        ({"tunnel_address": "198.18.0.11"},
         "tunnel_address 198.18.0.11 is the address of host h1"),
    ],
)
def test_a_host_address_clashing_with_a_network_or_host_conflicts(
    inv: Inventory, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"address": "198.18.0.12", "wg_public_key": KEY, **kwargs}
    with pytest.raises(Conflict, match=f"^{message}$"):
        inv.register_host("h2", args.pop("address"), **args)
    assert [h.name for h in inv.hosts()] == ["h1"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("wg_endpoint", "1.2.3.4:5_1820", "wg_endpoint '1.2.3.4:5_1820' is not IPv4:PORT"),
        ("wg_endpoint", "1.2.3.4:+51820", r"wg_endpoint '1.2.3.4:\+51820' is not IPv4:PORT"),
        ("wg_endpoint", "1.2.3.4:\u0665\u0661\u0668\u0662\u0660", "wg_endpoint .* is not IPv4"),
        ("wg_endpoint", "1.2.3.4:65536", "wg_endpoint '1.2.3.4:65536' is not IPv4:PORT"),
        ("tunnel_address", "224.0.0.9", "tunnel_address 224.0.0.9 is in the multicast range"),
        ("tunnel_address", "0.0.0.0", "tunnel_address 0.0.0.0 is in the 'this network' range"),
    ],
)
def test_bad_wireguard_fields_are_invalid(
    inv: Inventory, field: str, value: str, message: str
) -> None:
    with pytest.raises(Invalid, match=f"^{message}"):
        inv.register_host("h2", "198.18.0.12", wg_public_key=KEY, **{field: value})


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("127.0.0.1", "ip 127.0.0.1 is in the loopback range"),
        ("224.0.0.1", "ip 224.0.0.1 is in the multicast range"),
        ("10.1.0.0", "ip 10.1.0.0 is the network address of subnet 10.1.0.0/24"),
        ("10.1.0.255", "ip 10.1.0.255 is the broadcast address of subnet 10.1.0.0/24"),
        ("10.1.0.1", "ip 10.1.0.1 is the gateway of network web"),
        ("198.18.0.11", "ip 198.18.0.11 is outside subnet 10.1.0.0/24 of network web"),
    ],
)
def test_bad_container_ips_are_invalid(inv: Inventory, ip: str, message: str) -> None:
    with pytest.raises(Invalid, match=f"^{message}"):
        inv.add_endpoint("c1", "web", "h1", ip=ip)
    assert str(inv.add_endpoint("c1", "web", "h1", ip="10.1.0.9").ip) == "10.1.0.9"


def _legacy(store: SqliteStore) -> Inventory:
    """A store written before the rules: network `old` holds host h9's address."""
    store.put(HOSTS, "h9", {"name": "h9", "address": "10.7.0.2", "dpid": 9})
    store.put(NETWORKS, "old", Network(id="o", name="old", subnet=ipaddress.IPv4Network(
        "10.7.0.0/29"), gateway=IP("10.7.0.1")).model_dump(mode="json"))
    return Inventory(store, lambda _c: None)


def test_a_container_never_gets_a_host_address(store: SqliteStore) -> None:
    inv = _legacy(store)
    with pytest.raises(Conflict, match=r"^ip 10\.7\.0\.2 is the address of host h9$"):
        inv.add_endpoint("c1", "old", "h9", ip="10.7.0.2")
    allocated = [inv.add_endpoint(f"c{i}", "old", "h9").ip for i in range(4)]
    assert IP("10.7.0.2") not in allocated and allocated[0] == IP("10.7.0.3")


def test_a_host_keeps_registering_with_the_address_it_had(store: SqliteStore) -> None:
    """Refusing it would stop its agent and mend nothing; a new clash is still refused."""
    inv = _legacy(store)
    assert inv.register_host("h9", "10.7.0.2").dpid == 9
    with pytest.raises(Conflict, match=r"^address 10\.7\.0\.3 is inside subnet 10\.7\.0\.0/29"):
        inv.register_host("h9", "10.7.0.3")


@pytest.mark.parametrize(
    ("model", "doc", "field"),
    [
        (Network, {"id": "x", "name": "all", "subnet": "0.0.0.0/0", "gateway": "0.0.0.1"},
         "subnet 0.0.0.0/0 is too large"),
        (Network, {"id": "x", "name": "lo", "subnet": "127.0.0.0/8", "gateway": "127.0.0.1"},
         "subnet 127.0.0.0/8 overlaps the loopback range"),
        (Network, {"id": "x", "name": "n", "subnet": "10.1.0.0/24", "gateway": "10.1.0.255"},
         "gateway 10.1.0.255 is the broadcast address"),
        (Host, {"name": "h", "address": "10.0.0.1", "dpid": 1, "wg_endpoint": "1.2.3.4:5_1820"},
         "wg_endpoint '1.2.3.4:5_1820' is not IPv4:PORT"),
        (Host, {"name": "h", "address": "224.0.0.1", "dpid": 1},
         "address 224.0.0.1 is in the multicast range"),
        (Endpoint, {"id": "e", "name": "c", "network": "n", "host": "h", "ip": "127.0.0.1",
                    "mac": "02:da:7f:00:00:01", "port": "dle"},
         "ip 127.0.0.1 is in the loopback range"),
    ],
)
def test_a_stored_record_breaking_a_rule_is_a_corrupt_document(
    model: type[Any], doc: dict[str, Any], field: str
) -> None:
    """The load sees the API's rules (the same functions), as a CorruptDocument naming
    the record and the field."""
    with pytest.raises(CorruptDocument, match=f"(?s)corrupt x record 'k' in the store: .*{field}"):
        decode(model, "x", doc, "k")


def test_load_names_the_bad_record(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """At load the record is set aside with one line naming it and the field (the
    controller starts: docs/architecture.md, "Store schema and repair at load")."""
    store.put(NETWORKS, "all", {"id": "x", "name": "all", "subnet": "0.0.0.0/0",
                                "gateway": "0.0.0.1"})
    index = DesiredIndex()
    load_index(store, index)
    assert index.network("all") is None
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert re.match(r"store record network 'all' set aside as quarantine 'network/all': "
                    r"field subnet: .*0\.0\.0\.0/0", line), line
