"""The policy decision, table-driven over the precedence of docs/architecture.md:
pair policy > firewall rules > same network > group > default deny."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.desired.inventory import Inventory
from controller.desired.models import Endpoint
from controller.desired.policy import (
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    Decision,
    Verdict,
    decide,
    decide_egress,
    port_ranges,
)
from controller.store.sqlite import SqliteStore

IP = ipaddress.IPv4Address
TCP, UDP, ICMP = IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_ICMP
OUTSIDE = "192.0.2.7"  # an address no container has


@pytest.fixture
def inv(tmp_path: Path) -> Iterator[Inventory]:
    store = SqliteStore(tmp_path / "policy.db")
    inv = Inventory(store, lambda _c: None)
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    for name, subnet in (
        ("web", "10.1.0.0/24"), ("api", "10.2.0.0/24"), ("db", "10.3.0.0/24"),
        ("ops", "10.4.0.0/24"),
    ):  # fmt: skip
        inv.create_network(name, subnet)
    for name, net, host in (
        ("w1", "web", "h1"), ("w2", "web", "h2"), ("a1", "api", "h1"), ("d1", "db", "h2"),
        ("o1", "ops", "h1"),
    ):  # fmt: skip
        inv.add_endpoint(name, net, host)
    inv.create_group("front", ["web", "api"])
    yield inv
    store.close()


Setup = Callable[[Inventory], object]


@dataclass
class Case:
    id: str
    src: str  # container name, or an IPv4 address for traffic from outside
    dst: str
    verdict: str
    kind: str
    setup: list[Setup] = field(default_factory=list)
    proto: int = TCP
    port: int | None = 80
    reason: str | None = None  # start of the reason, when checked
    port_specific: bool = False


def rule(target_kind: str, target: str, action: str, src_kind: str = "any",
         src_value: str | None = None, proto: str = "any", ports: tuple[str, ...] = (),
         position: int | None = None) -> Setup:  # fmt: skip
    return lambda inv: inv.add_rule(
        target_kind, target, action, src_kind, src_value, proto, list(ports), position
    )


def pair(a: str, b: str, action: str) -> Setup:
    return lambda inv: inv.set_pair_policy(a, b, action)


CASES = [
    # 3. same network / 5. default
    Case("same network", "w1", "w2", "allow", "network", reason="same network web"),
    Case("same network, other direction", "w2", "w1", "allow", "network"),
    Case("different networks, no group", "w1", "d1", "deny", "default", reason="default deny"),
    Case("no group in common", "o1", "a1", "deny", "default"),
    # 4. groups
    Case("common group", "w1", "a1", "allow", "group", reason="group front (web, api)"),
    Case("common group, reverse", "a1", "w2", "allow", "group"),
    Case("group removed member", "w1", "a1", "deny", "default",
         setup=[lambda inv: inv.remove_group_member("front", "api")]),
    Case("first common group by name", "w1", "a1", "allow", "group", reason="group aaa ",
         setup=[lambda inv: inv.create_group("aaa", ["web", "api"])]),
    # 1. pair policies beat everything
    Case("disconnect beats same network", "w1", "w2", "deny", "pair",
         setup=[pair("w1", "w2", "deny")], reason="pair policy w1<->w2 (disconnect)"),
    Case("disconnect is symmetric", "w2", "w1", "deny", "pair", setup=[pair("w1", "w2", "deny")]),
    Case("connect beats default deny", "w1", "d1", "allow", "pair",
         setup=[pair("d1", "w1", "allow")], reason="pair policy d1<->w1 (connect)"),
    Case("disconnect beats group", "w1", "a1", "deny", "pair", setup=[pair("a1", "w1", "deny")]),
    Case("connect beats a firewall deny", "d1", "w1", "allow", "pair",
         setup=[rule("network", "web", "deny"), pair("w1", "d1", "allow")]),
    Case("disconnect beats a firewall allow", "d1", "w1", "deny", "pair",
         setup=[rule("network", "web", "allow", "container", "d1"), pair("w1", "d1", "deny")]),
    Case("pair of other containers does not apply", "w1", "w2", "allow", "network",
         setup=[pair("w1", "a1", "deny")]),
    # 2. firewall rules beat same network and groups
    Case("firewall deny beats same network", "w1", "w2", "deny", "firewall",
         setup=[rule("network", "web", "deny", "network", "web")],
         reason="firewall rule "),
    Case("firewall allow from a container", "d1", "w1", "allow", "firewall",
         setup=[rule("network", "web", "allow", "container", "d1")]),
    Case("rule from another container does not match", "o1", "w1", "deny", "default",
         setup=[rule("network", "web", "allow", "container", "d1")]),
    Case("firewall allow from a network", "d1", "w2", "allow", "firewall",
         setup=[rule("network", "web", "allow", "network", "db")]),
    Case("firewall allow from a group", "w1", "d1", "allow", "firewall",
         setup=[rule("network", "db", "allow", "group", "front")]),
    Case("group source: not a member", "o1", "d1", "deny", "default",
         setup=[rule("network", "db", "allow", "group", "front")]),
    Case("firewall allow from a CIDR", "d1", "w1", "allow", "firewall",
         setup=[rule("network", "web", "allow", "cidr", "10.3.0.0/16")]),
    Case("CIDR that does not hold the source", "o1", "w1", "deny", "default",
         setup=[rule("network", "web", "allow", "cidr", "10.3.0.0/16")]),
    Case("rules protect the destination only", "w1", "d1", "deny", "default",
         setup=[rule("network", "web", "allow", "network", "db")]),
    Case("firewall deny beats group", "a1", "w1", "deny", "firewall",
         setup=[rule("network", "web", "deny", "network", "api")]),
    Case("first match wins", "d1", "w1", "deny", "firewall",
         setup=[rule("network", "web", "deny", "cidr", "10.3.0.0/24"),
                rule("network", "web", "allow", "network", "db")]),
    Case("position 0 goes first", "d1", "w1", "allow", "firewall",
         setup=[rule("network", "web", "deny", "cidr", "10.3.0.0/24"),
                rule("network", "web", "allow", "network", "db", position=0)]),
    Case("rules on a group protect its networks", "o1", "a1", "allow", "firewall",
         setup=[rule("group", "front", "allow", "network", "ops")],
         reason="firewall rule "),
    Case("network rules go before group rules", "o1", "a1", "deny", "firewall",
         setup=[rule("group", "front", "allow", "network", "ops"),
                rule("network", "api", "deny", "network", "ops")]),
    Case("group rule beats group membership", "w1", "a1", "deny", "firewall",
         setup=[rule("group", "front", "deny", "network", "web")]),
    # protocols and ports
    Case("port rule matches", "d1", "w1", "allow", "firewall", port=80,
         setup=[rule("network", "web", "allow", "network", "db", "tcp", ("80",))],
         port_specific=True),
    Case("port rule, other port falls through", "d1", "w1", "deny", "default", port=81,
         setup=[rule("network", "web", "allow", "network", "db", "tcp", ("80",))],
         port_specific=True),
    Case("port range", "d1", "w1", "allow", "firewall", port=8050,
         setup=[rule("network", "web", "allow", "network", "db", "tcp", ("8000-8100",))],
         port_specific=True),
    Case("port range, above", "d1", "w1", "deny", "default", port=8101,
         setup=[rule("network", "web", "allow", "network", "db", "tcp", ("8000-8100",))],
         port_specific=True),
    Case("udp rule does not match tcp", "d1", "w1", "deny", "default", proto=TCP, port=53,
         setup=[rule("network", "web", "allow", "network", "db", "udp", ("53",))],
         port_specific=True),
    Case("udp rule matches udp", "d1", "w1", "allow", "firewall", proto=UDP, port=53,
         setup=[rule("network", "web", "allow", "network", "db", "udp", ("53",))],
         port_specific=True),
    Case("icmp rule", "d1", "w1", "allow", "firewall", proto=ICMP, port=None,
         setup=[rule("network", "web", "allow", "network", "db", "icmp")],
         port_specific=True),
    Case("port rule never matches icmp", "d1", "w1", "deny", "default", proto=ICMP, port=None,
         setup=[rule("network", "web", "allow", "network", "db", "tcp", ("1-65535",))],
         port_specific=True),
    Case("deny ssh within a network: ssh", "w1", "w2", "deny", "firewall", port=22,
         setup=[rule("network", "web", "deny", "any", None, "tcp", ("22",))],
         port_specific=True),
    Case("deny ssh within a network: http", "w1", "w2", "allow", "network", port=80,
         setup=[rule("network", "web", "deny", "any", None, "tcp", ("22",))],
         port_specific=True),
    Case("any-protocol rule is not port specific", "d1", "w1", "allow", "firewall",
         setup=[rule("network", "web", "allow", "network", "db")]),
    Case("port rule of another source is not port specific", "w1", "w2", "allow", "network",
         setup=[rule("network", "web", "deny", "network", "db", "tcp", ("22",))]),
    Case("earlier port rule makes a later match port specific", "d1", "w1", "allow",
         "firewall", port=80,
         setup=[rule("network", "web", "deny", "network", "db", "tcp", ("22",)),
                rule("network", "web", "allow", "network", "db")],
         port_specific=True),
    # traffic from outside daolinet (src None)
    Case("outside: default deny", OUTSIDE, "w1", "deny", "default",
         reason="default deny (not from a daolinet container)"),
    Case("outside: CIDR allow", OUTSIDE, "w1", "allow", "firewall",
         setup=[rule("network", "web", "allow", "cidr", "192.0.2.0/24", "tcp", ("80",))],
         port_specific=True),
    Case("outside: any allow", OUTSIDE, "w1", "allow", "firewall",
         setup=[rule("network", "web", "allow")]),
    Case("outside: container/network/group sources never match", OUTSIDE, "w1", "deny",
         "default",
         setup=[rule("network", "web", "allow", "network", "web"),
                rule("network", "web", "allow", "group", "front"),
                rule("network", "web", "allow", "container", "w2")]),
    Case("outside: CIDR deny before any allow", OUTSIDE, "w1", "deny", "firewall",
         setup=[rule("network", "web", "deny", "cidr", "192.0.2.0/28"),
                rule("network", "web", "allow")]),
]


def _run(inv: Inventory, case: Case) -> Decision:
    for step in case.setup:
        step(inv)
    dst = inv.endpoint(case.dst)
    src: Endpoint | None = inv.index.endpoint(case.src)
    src_ip = src.ip if src is not None else IP(case.src)
    return decide(inv.index, src_ip, dst, case.proto, case.port, src)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(inv: Inventory, case: Case) -> None:
    d = _run(inv, case)
    assert (d.verdict.value, d.kind) == (case.verdict, case.kind), d.reason
    assert d.port_specific is case.port_specific, d.reason
    if case.reason is not None:
        assert d.reason.startswith(case.reason), d.reason
    if d.kind == "firewall":
        assert d.rule_id is not None
        r = inv.rule(d.rule_id)
        assert d.reason == f"firewall rule {r.id[:8]} #{r.position} on {r.target_kind} {r.target}"
        assert d.verdict.value == r.action
    else:
        assert d.rule_id is None


def test_changes_apply_at_once(inv: Inventory) -> None:
    """The index the core reads changes with the inventory: no caching in between."""
    w1, w2 = inv.endpoint("w1"), inv.endpoint("w2")
    assert decide(inv.index, w1.ip, w2, TCP, 80, w1).verdict is Verdict.ALLOW
    inv.set_pair_policy("w1", "w2", "deny")
    assert decide(inv.index, w1.ip, w2, TCP, 80, w1).verdict is Verdict.DENY
    inv.set_pair_policy("w1", "w2", "allow")
    assert decide(inv.index, w1.ip, w2, TCP, 80, w1).kind == "pair"
    inv.clear_pair_policy("w2", "w1")
    assert decide(inv.index, w1.ip, w2, TCP, 80, w1).kind == "network"
    r = inv.add_rule("network", "web", "deny")
    assert decide(inv.index, w1.ip, w2, TCP, 80, w1).verdict is Verdict.DENY
    inv.delete_rule(r.id)
    assert decide(inv.index, w1.ip, w2, TCP, 80, w1).verdict is Verdict.ALLOW


def test_deleted_group_source_matches_nothing(inv: Inventory) -> None:
    inv.create_group("ops-only", ["ops"])
    inv.add_rule("network", "db", "allow", "group", "ops-only")
    o1, d1 = inv.endpoint("o1"), inv.endpoint("d1")
    assert decide(inv.index, o1.ip, d1, TCP, 80, o1).verdict is Verdict.ALLOW
    inv.delete_group("ops-only")
    assert decide(inv.index, o1.ip, d1, TCP, 80, o1).kind == "default"


def test_decide_egress(inv: Inventory) -> None:
    w1 = inv.endpoint("w1")
    d = decide_egress(inv.index, w1)
    assert (d.verdict, d.reason) == (Verdict.DENY, "network web has no external access")
    inv.set_network_external("web", True)
    d = decide_egress(inv.index, w1)
    assert (d.verdict, d.reason, d.kind) == (Verdict.ALLOW, "network web is external", "network")


def test_port_ranges() -> None:
    assert port_ranges(("80", "8000-8100")) == ((80, 80), (8000, 8100))
    assert port_ranges(()) == ()
