"""Inventory: groups, pair policies, firewall rules, published ports, network options."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.desired.errors import Conflict, Invalid, NotFound
from controller.desired.events import (
    Change,
    EndpointRenamed,
    GroupChanged,
    NetworkChanged,
    NetworkRemoved,
    PairPolicyChanged,
    PublishedPortAdded,
    PublishedPortRemoved,
    RulesChanged,
)
from controller.desired.inventory import Inventory
from controller.desired.models import RuleSource
from tests.unit.storebackends import UNIT_BACKENDS, Backend, open_backend


@pytest.fixture(params=UNIT_BACKENDS)
def backend(request, tmp_path: Path):
    """The tests run here on SQLite, and again on etcd (a fresh prefix of the session's
    cluster) in tests/integration/test_inventory_policy_on_etcd.py."""
    with open_backend(request, tmp_path) as b:
        yield b


@pytest.fixture
def events() -> list[Change]:
    return []


@pytest.fixture
def inv(backend: Backend, events: list[Change]) -> Iterator[Inventory]:
    inv = Inventory(backend.open(), events.append)
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("api", "10.2.0.0/24")
    inv.add_endpoint("c1", "web", "h1")
    inv.add_endpoint("c2", "api", "h2")
    events.clear()
    yield inv  # its store is closed by the backend fixture


# --- networks ---------------------------------------------------------------------------


def test_external_network(inv: Inventory, events: list[Change]) -> None:
    assert inv.network("web").external is False
    ext = inv.create_network("out", "10.9.0.0/24", external=True)
    assert ext.external is True
    after = inv.set_network_external("web", True)
    assert after.external is True and inv.index.network("web") == after
    assert events[-1] == NetworkChanged(after.model_copy(update={"external": False}), after)
    n = len(events)
    assert inv.set_network_external("web", True) == after  # no change, no event
    assert len(events) == n
    with pytest.raises(NotFound, match="network nope not found"):
        inv.set_network_external("nope", True)


def test_deleting_a_network_leaves_groups_and_drops_its_rules(
    inv: Inventory, events: list[Change]
) -> None:
    inv.create_network("tmp", "10.5.0.0/24")
    inv.create_group("g", ["web", "tmp"])
    inv.add_rule("network", "tmp", "deny")
    kept = inv.add_rule("network", "web", "allow", "network", "tmp")
    events.clear()
    inv.delete_network("tmp")
    assert inv.group("g").networks == ("web",)
    assert inv.index.groups_of_network("tmp") == frozenset()
    assert inv.rules() == [kept]  # a rule naming it as a source stays (matches nothing)
    assert [type(e) for e in events] == [RulesChanged, GroupChanged, NetworkRemoved]
    assert events[1] == GroupChanged("g", ("tmp", "web"), ("web",))


# --- groups -----------------------------------------------------------------------------


def test_group_lifecycle(inv: Inventory, events: list[Change]) -> None:
    g = inv.create_group("g", ["web", "web"])
    assert g.networks == ("web",)
    assert events[-1] == GroupChanged("g", (), ("web",))
    assert inv.index.groups_of_network("web") == {"g"}
    g = inv.add_group_member("g", "api")
    assert g.networks == ("api", "web")
    assert events[-1] == GroupChanged("g", ("web",), ("api", "web"))
    assert events[-1].networks == {"api", "web"}  # type: ignore[union-attr]
    n = len(events)
    assert inv.add_group_member("g", "api") == g  # already a member: no change
    assert len(events) == n
    inv.create_group("h", ["web"])
    assert inv.index.groups_of_network("web") == {"g", "h"}
    assert [x.name for x in inv.groups()] == ["g", "h"]
    g = inv.remove_group_member("g", "web")
    assert g.networks == ("api",)
    assert inv.index.groups_of_network("web") == {"h"}
    gone = inv.delete_group("g")
    assert gone == g
    assert events[-1] == GroupChanged("g", ("api",), ())
    assert inv.index.groups_of_network("api") == frozenset()
    with pytest.raises(NotFound, match="group g not found"):
        inv.group("g")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda i: i.create_group("bad name"), Invalid, "group name 'bad name' is invalid"),
        (lambda i: i.create_group("g", ["nope"]), NotFound, "network nope not found"),
        (lambda i: i.create_group("taken"), Conflict, "group taken already exists"),
        (lambda i: i.delete_group("nope"), NotFound, "group nope not found"),
        (lambda i: i.add_group_member("nope", "web"), NotFound, "group nope not found"),
        (lambda i: i.add_group_member("taken", "nope"), NotFound, "network nope not found"),
        (lambda i: i.remove_group_member("taken", "api"), NotFound,
         "network api is not a member of group taken"),
    ],
)
def test_group_errors(inv: Inventory, call, error, message) -> None:
    inv.create_group("taken", ["web"])
    with pytest.raises(error, match=message):
        call(inv)


def test_deleting_a_group_drops_its_rules(inv: Inventory, events: list[Change]) -> None:
    inv.create_group("g", ["web", "api"])
    inv.add_rule("group", "g", "deny")
    events.clear()
    inv.delete_group("g")
    assert inv.rules() == []
    assert events == [
        RulesChanged("group", "g", ("api", "web")),
        GroupChanged("g", ("api", "web"), ()),
    ]


# --- pair policies ----------------------------------------------------------------------


def test_pair_policy_lifecycle(inv: Inventory, events: list[Change]) -> None:
    c2 = inv.endpoint("c2")
    p = inv.set_pair_policy(c2.id, "c1", "deny")  # by id or name; stored a < b
    assert (p.a, p.b, p.action) == ("c1", "c2", "deny")
    assert events[-1] == PairPolicyChanged("c1", "c2", None, "deny")
    assert inv.pair_policy("c2", "c1") == p
    assert inv.index.pair_policy("c2", "c1") == p
    n = len(events)
    assert inv.set_pair_policy("c1", "c2", "deny") == p  # same action: no event
    assert len(events) == n
    p2 = inv.set_pair_policy("c1", "c2", "allow")
    assert events[-1] == PairPolicyChanged("c1", "c2", "deny", "allow")
    assert inv.pair_policies() == [p2]
    assert inv.pair_policies("c2") == [p2]
    assert inv.pair_policies("other") == []
    cleared = inv.clear_pair_policy("c2", "c1")
    assert cleared == p2
    assert events[-1] == PairPolicyChanged("c1", "c2", "allow", None)
    assert inv.index.pair_policy("c1", "c2") is None


def test_pair_policy_outlives_its_containers(inv: Inventory) -> None:
    inv.set_pair_policy("c1", "c2", "deny")
    inv.remove_endpoint("c2")
    assert inv.pair_policy("c1", "c2").action == "deny"  # by name
    inv.add_endpoint("c2", "web", "h2")  # re-created under its name: policy applies again
    assert inv.index.pair_policy("c1", "c2") is not None
    inv.remove_endpoint("c2")
    inv.clear_pair_policy("c1", "c2")  # clear works on a name that no longer exists


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda i: i.set_pair_policy("ghost", "c1", "deny"), NotFound, "container ghost not found"),
        (lambda i: i.set_pair_policy("c1", "ghost", "deny"), NotFound, "container ghost not found"),
        (lambda i: i.set_pair_policy("c1", "c1", "deny"), Invalid,
         "b 'c1' is the same container as a"),
        (lambda i: i.set_pair_policy("c1", "c2", "maybe"), Invalid,
         "action 'maybe' must be allow or deny"),
        (lambda i: i.pair_policy("c1", "c2"), NotFound, "no pair policy between c1 and c2"),
        (lambda i: i.clear_pair_policy("c1", "c2"), NotFound,
         "no pair policy between c1 and c2"),
    ],
)
def test_pair_policy_errors(inv: Inventory, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(inv)


# --- firewall rules ---------------------------------------------------------------------


def test_rules_order_insert_and_delete(inv: Inventory, events: list[Change]) -> None:
    a = inv.add_rule("network", "web", "allow", "network", "api", "tcp", ["80", 443])
    assert (a.position, a.ports, a.source) == (0, ("80", "443"), RuleSource(kind="network",
                                                                            value="api"))
    assert events[-1] == RulesChanged("network", "web", ("web",))
    b = inv.add_rule("network", "web", "deny")
    c = inv.add_rule("network", "web", "allow", "cidr", "192.0.2.0/24", position=0)
    order = inv.index.rules_for("network", "web")
    assert [r.id for r in order] == [c.id, a.id, b.id]
    assert [r.position for r in order] == [0, 1, 2]
    inv.delete_rule(a.id)
    order = inv.index.rules_for("network", "web")
    assert [(r.id, r.position) for r in order] == [(c.id, 0), (b.id, 1)]
    assert inv.rule(b.id).position == 1
    assert inv.rules("network", "web") == list(order)
    assert inv.rules("group") == []
    inv.create_group("g", ["api"])
    g = inv.add_rule("group", "g", "deny", "container", inv.endpoint("c1").id)
    assert g.source == RuleSource(kind="container", value="c1")  # an id becomes the name
    assert events[-1] == RulesChanged("group", "g", ("api",))
    inv.delete_rule(g.id)
    assert events[-1] == RulesChanged("group", "g", ("api",))


def test_rule_normalisation(inv: Inventory) -> None:
    r = inv.add_rule("network", "web", "allow", "cidr", " 192.0.2.9 ", "udp",
                     ["53", "53", "1000-1000", " 7-9 "])  # fmt: skip
    assert r.source == RuleSource(kind="cidr", value="192.0.2.9/32")
    assert r.ports == ("53", "1000", "7-9")
    r = inv.add_rule("network", "web", "allow", "any", "  ")
    assert r.source == RuleSource(kind="any")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"target_kind": "host"}, Invalid, "target_kind 'host' must be network or group"),
        ({"target": "nope"}, NotFound, "network nope not found"),
        ({"target_kind": "group", "target": "nope"}, NotFound, "group nope not found"),
        ({"action": "drop"}, Invalid, "action 'drop' must be allow or deny"),
        ({"protocol": "sctp"}, Invalid, "protocol 'sctp' must be one of tcp, udp, icmp, any"),
        ({"protocol": "icmp", "ports": ["80"]}, Invalid, "ports need protocol tcp or udp"),
        ({"protocol": "any", "ports": ["80"]}, Invalid, "ports need protocol tcp or udp"),
        ({"protocol": "tcp", "ports": ["http"]}, Invalid, "ports entry 'http' is not a port"),
        ({"protocol": "tcp", "ports": ["0"]}, Invalid, "ports entry '0' is out of range"),
        ({"protocol": "tcp", "ports": ["70000"]}, Invalid, "ports entry '70000' is out of range"),
        ({"protocol": "tcp", "ports": ["90-80"]}, Invalid, "ports entry '90-80' is an empty"),
        ({"protocol": "tcp", "ports": ["-80"]}, Invalid, "ports entry '-80' is not a port"),
        ({"protocol": "tcp", "ports": ["8-"]}, Invalid, "ports entry '8-' is not a port"),
        ({"protocol": "tcp", "ports": [True]}, Invalid, "ports entry True is not a port"),
        ({"protocol": "tcp", "ports": [str(p) for p in range(1, 40)]}, Invalid,
         "ports has 39 entries, at most 32"),
        ({"source_kind": "cidr", "source_value": "10.0.0.1/8"}, Invalid,
         r"source.value 10.0.0.1/8 has host bits set \(did you mean 10.0.0.0/8\?\)"),
        ({"source_kind": "cidr", "source_value": "nope"}, Invalid,
         "source.value 'nope' is not an IPv4 address or CIDR"),
        ({"source_kind": "cidr"}, Invalid, "source.value is required for source kind cidr"),
        ({"source_kind": "any", "source_value": "x"}, Invalid,
         "source.value 'x' must be empty for source kind any"),
        ({"source_kind": "container", "source_value": "ghost"}, NotFound,
         "container ghost not found"),
        ({"source_kind": "network", "source_value": "nope"}, NotFound, "network nope not found"),
        ({"source_kind": "group", "source_value": "nope"}, NotFound, "group nope not found"),
        ({"source_kind": "host", "source_value": "h1"}, Invalid,
         "source.kind 'host' must be one of"),
        ({"position": 2}, Invalid,
         r"position 2 is out of range 0-1 \(1 rule\(s\) on network web\)"),
        ({"position": -1}, Invalid, "position -1 is out of range"),
    ],
)
def test_rule_errors(inv: Inventory, kwargs, error, message) -> None:
    inv.add_rule("network", "web", "allow")
    args = {"target_kind": "network", "target": "web", "action": "allow"} | kwargs
    with pytest.raises(error, match=message):
        inv.add_rule(**args)
    assert len(inv.rules()) == 1  # nothing half-done


def test_rule_not_found(inv: Inventory) -> None:
    with pytest.raises(NotFound, match="firewall rule x not found"):
        inv.rule("x")
    with pytest.raises(NotFound, match="firewall rule x not found"):
        inv.delete_rule("x")


# --- published ports --------------------------------------------------------------------


def test_published_ports(inv: Inventory, events: list[Change]) -> None:
    p = inv.publish_port("c1", 8080, 80)
    assert (p.container, p.protocol, p.host_port, p.container_port) == ("c1", "tcp", 8080, 80)
    assert events[-1] == PublishedPortAdded(p)
    assert inv.index.published_port(8080, "tcp", "h1") == p
    assert inv.index.published_port(8080, "udp", "h1") is None
    assert inv.index.published_port(8080, "tcp", "h2") is None
    # the same host port on another host, or another protocol, is free
    q = inv.publish_port("c2", 8080, 80)
    u = inv.publish_port(inv.endpoint("c1").id, 8080, 53, "udp")
    assert inv.index.published_port(8080, "tcp", "h2") == q
    assert inv.published_ports("c1") == [p, u]
    assert inv.published_ports() == [p, u, q]
    assert inv.published_port(p.id) == p
    assert inv.unpublish_port(p.id) == p
    assert events[-1] == PublishedPortRemoved(p)
    assert inv.index.published_port(8080, "tcp", "h1") is None
    assert inv.index.published_port(8080, "tcp", "h2") == q


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("c1", 8080, 80), Conflict,
         "host_port 8080/tcp on host h1 is already published for container c1"),
        (("ghost", 1, 1), NotFound, "container ghost not found"),
        (("c1", 0, 80), Invalid, "host_port 0 is not a port"),
        (("c1", 80, 65536), Invalid, "container_port 65536 is not a port"),
        (("c1", 81, 80, "icmp"), Invalid, "protocol 'icmp' must be tcp or udp"),
    ],
)
def test_published_port_errors(inv: Inventory, args, error, message) -> None:
    inv.publish_port("c1", 8080, 80)
    with pytest.raises(error, match=message):
        inv.publish_port(*args)


def test_published_port_not_found(inv: Inventory) -> None:
    with pytest.raises(NotFound, match="published port x not found"):
        inv.unpublish_port("x")


# --- persistence ------------------------------------------------------------------------


def test_policy_survives_restart(inv: Inventory, backend: Backend) -> None:
    inv.create_group("g", ["web", "api"])
    inv.set_pair_policy("c1", "c2", "deny")
    r0 = inv.add_rule("network", "web", "deny", "network", "api", "tcp", ["22"])
    r1 = inv.add_rule("network", "web", "allow", position=0)
    p = inv.publish_port("c1", 8080, 80)
    inv.set_network_external("web", True)
    before = inv.index
    store = backend.open()
    again = Inventory(store, lambda _c: None)
    try:
        idx = again.index
        assert idx.groups() == before.groups()
        assert idx.groups_of_network("web") == {"g"}
        assert idx.pair_policy("c2", "c1") == before.pair_policy("c1", "c2")
        assert [r.id for r in idx.rules_for("network", "web")] == [r1.id, r0.id]
        assert idx.published_port(8080, "tcp", "h1") == p
        assert idx.network("web").external is True  # type: ignore[union-attr]
    finally:
        store.close()


# --- internal networks, reserved addresses, renames (Docker's options) ----------------


def test_internal_network_has_no_external_access(inv: Inventory) -> None:
    net = inv.create_network("quiet", "10.8.0.0/24", internal=True)
    assert (net.internal, net.external) == (True, False)
    inv.add_endpoint("q1", "quiet", "h1")
    with pytest.raises(Conflict, match="network quiet is internal: it has no external access"):
        inv.set_network_external("quiet", True)
    with pytest.raises(Conflict, match="on internal network quiet, which publishes no ports"):
        inv.publish_port("q1", 8080, 80)
    assert inv.published_ports("q1") == []
    with pytest.raises(Invalid, match="external: an internal network has no external access"):
        inv.create_network("both", "10.7.0.0/24", external=True, internal=True)
    # an ordinary network still may
    assert inv.set_network_external("web", True).external is True
    assert inv.publish_port("c1", 8080, 80).container == "c1"


def test_reserved_addresses_are_never_given(inv: Inventory) -> None:
    net = inv.create_network("aux", "10.6.0.0/29", reserved=["10.6.0.3", "10.6.0.2", "10.6.0.2"])
    assert net.reserved == (net.gateway + 1, net.gateway + 2)
    given = [inv.add_endpoint(f"x{i}", "aux", "h1").ip for i in range(3)]
    assert [str(a) for a in given] == ["10.6.0.4", "10.6.0.5", "10.6.0.6"]
    inv.remove_endpoint("x0")
    with pytest.raises(Conflict, match=r"ip 10\.6\.0\.2 is reserved on network aux"):
        inv.add_endpoint("y", "aux", "h1", ip="10.6.0.2")
    assert str(inv.add_endpoint("y", "aux", "h1", ip="10.6.0.4").ip) == "10.6.0.4"


@pytest.mark.parametrize(
    ("reserved", "message"),
    [
        (["10.6.0.0"], "reserved address 10.6.0.0 is not a host address of subnet 10.6.0.0/24"),
        (["10.6.0.255"], "reserved address 10.6.0.255 is not a host address"),
        (["10.5.0.9"], "reserved address 10.5.0.9 is not a host address"),
        (["nope"], "reserved 'nope' is not an IPv4 address"),
        ([f"10.6.0.{i}" for i in range(2, 67)], "reserved: at most 64 addresses, not 65"),
    ],
)
def test_reserved_address_errors(inv: Inventory, reserved: list[str], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        inv.create_network("aux", "10.6.0.0/24", reserved=reserved)
    assert inv.index.network("aux") is None


def test_rename_carries_published_ports(inv: Inventory, events: list[Change]) -> None:
    """The Docker plugin publishes `-p` ports under the provisional name; the rename to
    the container's Docker name takes them along (the DNAT follows the name)."""
    before = inv.add_endpoint("docker-0123456789ab", "web", "h1")
    port = inv.publish_port("docker-0123456789ab", 8081, 7000)
    events.clear()
    after = inv.update_endpoint("docker-0123456789ab", name="w1")
    moved = port.model_copy(update={"container": "w1"})
    assert inv.published_ports("w1") == [moved]
    assert inv.index.published_port(8081, "tcp", "h1") == moved
    assert events == [PublishedPortRemoved(port), PublishedPortAdded(moved),
                      EndpointRenamed(before, after)]

    # a clash with a port the new name already publishes refuses the rename, whole
    inv.add_endpoint("docker-ba9876543210", "web", "h2")
    other = inv.publish_port("docker-ba9876543210", 8081, 7000)
    inv.remove_endpoint("w1")
    with pytest.raises(Conflict, match=f"host_port 8081/tcp is already published for "
                                       f"container w1 \\(id {moved.id}\\)"):
        inv.update_endpoint("docker-ba9876543210", name="w1")
    assert inv.endpoint("docker-ba9876543210").name == "docker-ba9876543210"
    assert inv.published_ports("docker-ba9876543210") == [other]


def test_aliases_and_hostname_are_recorded_and_announced(
    inv: Inventory, events: list[Change]
) -> None:
    """The names the plugin reads from Docker after the join (names responder)."""
    before = inv.add_endpoint("w1", "web", "h1")
    events.clear()
    after = inv.update_endpoint("w1", aliases=["web", "Api.Internal", "web"], hostname="box")
    assert (after.aliases, after.hostname) == (("web", "Api.Internal"), "box")
    assert inv.endpoint("w1") == after
    assert events == [EndpointRenamed(before, after)]
    events.clear()
    assert inv.update_endpoint("w1", aliases=["web", "Api.Internal"]) == after
    assert events == []  # nothing changed, nothing announced
    cleared = inv.update_endpoint("w1", hostname="")
    assert cleared.hostname is None and events == [EndpointRenamed(after, cleared)]

def test_network_labels(inv: Inventory) -> None:
    net = inv.create_network("lab", "10.6.0.0/24", labels={"team": "blue", "a.b/c": ""})
    assert inv.network("lab").labels == net.labels == {"team": "blue", "a.b/c": ""}
    assert inv.create_network("none", "10.7.0.0/24").labels == {}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"": "x"}, "labels: key '': String should have at least 1 character"),
        ({"with space": "x"}, "labels: key 'with space': String should match pattern"),
        ({"k": "line\nbreak"}, "labels: value of 'k': String should match pattern"),
        ({"k" * 129: "x"}, "String should have at most 128 characters"),
        ({"k": "v" * 1025}, "labels: value of 'k': String should have at most 1024 characters"),
        ({f"k{i}": "" for i in range(33)}, "labels: at most 32, not 33"),
    ],
)
def test_network_label_errors(inv: Inventory, labels: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid, match=re.escape(message)):
        inv.create_network("lab", "10.6.0.0/24", labels=labels)
    assert inv.index.network("lab") is None
