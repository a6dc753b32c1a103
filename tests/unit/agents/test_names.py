"""The names table of a host (controller/agents/names.py): a container resolves the
names of exactly the containers it may open a connection to, as `decide()` says for
packets, and a host's table holds only its own containers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.agents.messages import STATE_MESSAGE, NamesMessage
from controller.agents.names import MAX_PEERS, SourceNames, host_names
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore


@pytest.fixture
def inv(tmp_path: Path) -> Iterator[Inventory]:
    store = SqliteStore(tmp_path / "names.db")
    inv = Inventory(store, lambda _c: None)
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    for name, subnet in (("web", "10.1.0.0/24"), ("api", "10.2.0.0/24"),
                         ("db", "10.3.0.0/24")):
        inv.create_network(name, subnet)
    for name, net, host in (("w1", "web", "h1"), ("w2", "web", "h2"), ("a1", "api", "h2"),
                            ("d1", "db", "h2")):
        inv.add_endpoint(name, net, host)
    inv.update_endpoint("w2", aliases=["front", "www.example.test"], hostname="Box2")
    yield inv
    store.close()


def names_seen(inv: Inventory, container: str) -> dict[str, tuple[str, ...]]:
    """What `container` may resolve: address -> its names."""
    ep = inv.endpoint(container)
    (table,) = [t for t in host_names(inv.index.view(), ep.host) if t.source == ep.ip]
    return {str(p.ip): p.names for p in table.peers}


def by_name(inv: Inventory, seen: dict[str, tuple[str, ...]]) -> set[str]:
    return {names[0] for names in seen.values()}


def test_same_network_on_another_host_with_aliases_and_hostname(inv: Inventory) -> None:
    seen = names_seen(inv, "w1")
    assert by_name(inv, seen) == {"w1", "w2"}  # itself, and its network's other container
    assert seen[str(inv.endpoint("w2").ip)] == ("w2", "front", "www.example.test", "box2")


def test_other_networks_are_not_resolved_until_a_group_joins_them(inv: Inventory) -> None:
    assert "a1" not in by_name(inv, names_seen(inv, "w1"))
    inv.create_group("front", ["web", "api"])
    assert "a1" in by_name(inv, names_seen(inv, "w1"))
    assert "d1" not in by_name(inv, names_seen(inv, "w1"))


def test_a_disconnected_pair_does_not_resolve_each_other(inv: Inventory) -> None:
    inv.set_pair_policy("w1", "w2", "deny")
    assert by_name(inv, names_seen(inv, "w1")) == {"w1"}
    assert "w1" not in by_name(inv, names_seen(inv, "w2"))
    inv.set_pair_policy("w1", "d1", "allow")  # connect across networks
    assert "d1" in by_name(inv, names_seen(inv, "w1"))


def test_firewall_rules_decide_as_for_packets(inv: Inventory) -> None:
    # db takes only tcp/5432 from web: w1 may open that one connection, so it resolves d1
    inv.add_rule("network", "db", "allow", "network", "web", "tcp", ["5432"])
    assert "d1" in by_name(inv, names_seen(inv, "w1"))
    assert "d1" not in by_name(inv, names_seen(inv, "a1"))  # api: no rule, other network
    # web refuses everything from anywhere: nobody resolves its containers, even in web
    inv.add_rule("network", "web", "deny")
    assert by_name(inv, names_seen(inv, "w2")) == {"w2", "d1"}  # not w1; itself always
    assert "w1" not in by_name(inv, names_seen(inv, "d1"))


def test_a_port_range_allowed_past_a_deny_counts(inv: Inventory) -> None:
    # deny tcp 1-79 and 81-65535 and udp from web; icmp denied too; tcp/80 stays allowed
    inv.add_rule("network", "db", "allow", "network", "web", "tcp", ["80"])
    inv.add_rule("network", "db", "deny", "any")
    assert "d1" in by_name(inv, names_seen(inv, "w1"))
    inv.add_rule("network", "db", "deny", "network", "web", "tcp", ["80"], position=0)
    assert "d1" not in by_name(inv, names_seen(inv, "w1"))


def test_a_host_table_holds_its_own_containers_only(inv: Inventory) -> None:
    view = inv.index.view()
    sources = {str(t.source) for t in host_names(view, "h1")}
    assert sources == {str(inv.endpoint("w1").ip)}
    assert {str(t.source) for t in host_names(view, "h2")} == {
        str(inv.endpoint(n).ip) for n in ("w2", "a1", "d1")
    }
    assert host_names(view, "h3") == []


def test_the_names_message_round_trips_and_bounds_its_sizes(inv: Inventory) -> None:
    tables = host_names(inv.index.view(), "h2")
    wire = NamesMessage.of(7, tables).wire()
    back = STATE_MESSAGE.validate_python(wire)
    assert isinstance(back, NamesMessage) and back.seq == 7
    assert [(t.source, [(p.ip, tuple(p.names)) for p in t.peers]) for t in back.tables] == [
        (t.source, [(p.ip, p.names) for p in t.peers]) for t in tables
    ]
    too_many = dict(wire, tables=[
        {"source": "10.9.0.1", "peers": [{"ip": "10.9.0.2", "names": ["x"]}] * (MAX_PEERS + 1)}
    ])
    with pytest.raises(ValueError, match="peers"):
        STATE_MESSAGE.validate_python(too_many)
    bad_name = dict(wire, tables=[
        {"source": "10.9.0.1", "peers": [{"ip": "10.9.0.2", "names": ["a b"]}]}
    ])
    with pytest.raises(ValueError, match="names"):
        STATE_MESSAGE.validate_python(bad_name)


def test_source_names_are_comparable_for_level_triggered_sends() -> None:
    a = SourceNames(ipaddress.IPv4Address("10.1.0.2"), ())
    assert [a] == [SourceNames(ipaddress.IPv4Address("10.1.0.2"), ())]
