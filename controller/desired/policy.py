"""Who may reach whom: the decision taken at the first packet of a connection.

Precedence, most specific first (docs/architecture.md, "Policy"):

1. pair policy: `connect A B` allows, `disconnect A B` denies, whatever else says;
2. firewall rules of the destination: the rules on its network, then the rules on
   each group its network is in (groups by name); within one target in order,
   the first rule whose source, protocol and ports match decides;
3. same network: allowed;
4. a group that holds both networks: allowed;
5. otherwise denied.

Traffic from outside daolinet (`src is None`, e.g. through a published port) only
meets step 2, with rules whose source is a CIDR or `any`; otherwise it is denied.

A pair policy or firewall rule in audit mode (`audit: true`) is skipped: the
decision is the one it would be without it.  Each audited one that would have
decided, were it alone enforced (nothing enforced above it decides first), is
named in `Decision.audit` with its verdict, for the connection log
(docs/architecture.md, "Audit mode").

`decide()` is pure and cheap (dict hits and the few rules of one network), so the
core calls it on every PacketIn, and again on every live connection after a
policy change event to find the ones to revoke.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass, replace

from controller.desired.index import DesiredReads
from controller.desired.models import Endpoint, FirewallRule, PairPolicy

IP_PROTO_ICMP = 1
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17

PROTO_NUMBERS: dict[str, int] = {"icmp": IP_PROTO_ICMP, "tcp": IP_PROTO_TCP, "udp": IP_PROTO_UDP}
PROTO_NAMES: dict[int, str] = {v: k for k, v in PROTO_NUMBERS.items()}


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class AuditNote:
    """What an audited pair policy or firewall rule would have decided."""

    kind: str  # "pair" | "firewall"
    id: str  # the rule's id, or the pair policy's "a|b" (its store key)
    would: str  # "allow" | "deny"
    reason: str  # as Decision.reason: "firewall rule 1a2b3c4d #0 on network web"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str  # human text: "same network web", "pair policy a<->b (disconnect)", ...
    kind: str  # "pair" | "firewall" | "network" | "group" | "default"
    rule_id: str | None = None  # FirewallRule.id when kind == "firewall"
    # True when another protocol/port of the same address pair may get another
    # verdict (a firewall rule with a protocol or ports decided or could have): the
    # datapath must then match the protocol and port, not only the addresses.  An
    # audited rule counts too, so the log sees every protocol/port it tells apart.
    port_specific: bool = False
    audit: tuple[AuditNote, ...] = ()  # audited ones that would have decided


@functools.lru_cache(maxsize=4096)
def port_ranges(ports: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """("80", "8000-8100") -> ((80, 80), (8000, 8100)); the inventory validated them."""
    ranges = []
    for item in ports:
        lo, _, hi = item.partition("-")
        ranges.append((int(lo), int(hi or lo)))
    return tuple(ranges)


@functools.lru_cache(maxsize=4096)
def _cidr(value: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        return None


def _source_matches(
    index: DesiredReads, rule: FirewallRule, src_ip: ipaddress.IPv4Address, src: Endpoint | None
) -> bool:
    source = rule.source
    if source.kind == "any":
        return True
    if source.kind == "cidr":
        net = _cidr(source.value or "")
        return net is not None and src_ip in net
    if src is None:
        return False  # container, network and group sources name daolinet containers
    if source.kind == "container":
        return src.name == source.value
    if source.kind == "network":
        return src.network == source.value
    if source.kind == "group":
        return source.value in index.groups_of_network(src.network)
    return False  # pragma: no cover - SourceKind is closed


def _traffic_matches(rule: FirewallRule, proto: int, dst_port: int | None) -> bool:
    if rule.protocol != "any" and PROTO_NUMBERS[rule.protocol] != proto:
        return False
    if not rule.ports:
        return True
    if dst_port is None or proto not in (IP_PROTO_TCP, IP_PROTO_UDP):
        return False
    return any(lo <= dst_port <= hi for lo, hi in port_ranges(rule.ports))


def rule_label(rule: FirewallRule) -> str:
    return f"firewall rule {rule.id[:8]} #{rule.position} on {rule.target_kind} {rule.target}"


def pair_label(pair: PairPolicy) -> str:
    word = "connect" if pair.action == "allow" else "disconnect"
    return f"pair policy {pair.a}<->{pair.b} ({word})"


def _firewall(
    index: DesiredReads,
    src_ip: ipaddress.IPv4Address,
    dst: Endpoint,
    proto: int,
    dst_port: int | None,
    src: Endpoint | None,
    audited: list[AuditNote],
) -> tuple[FirewallRule | None, bool]:
    """The deciding rule (or None) and whether protocol/port took part; the audited
    rules that match before it are added to `audited`."""
    port_specific = False
    targets = [("network", dst.network)]
    targets += [("group", g) for g in sorted(index.groups_of_network(dst.network))]
    for kind, target in targets:
        for rule in index.rules_for(kind, target):
            if not _source_matches(index, rule, src_ip, src):
                continue
            if rule.protocol != "any" or rule.ports:
                port_specific = True
            if _traffic_matches(rule, proto, dst_port):
                if rule.audit:
                    audited.append(
                        AuditNote("firewall", rule.id, rule.action, rule_label(rule))
                    )
                    continue
                return rule, port_specific
    return None, port_specific


def decide(
    index: DesiredReads,
    src_ip: ipaddress.IPv4Address,
    dst: Endpoint,
    proto: int,
    dst_port: int | None,
    src: Endpoint | None = None,
) -> Decision:
    """May `src_ip` (the container `src`, or an outside address) open `proto/dst_port`
    to `dst`?  `proto` is the IP protocol number; `dst_port` None for ICMP."""
    audited: list[AuditNote] = []
    if src is not None:
        pair = index.pair_policy(src.name, dst.name)
        if pair is not None:
            if not pair.audit:
                return Decision(Verdict(pair.action), pair_label(pair), "pair")
            audited.append(AuditNote("pair", f"{pair.a}|{pair.b}", pair.action, pair_label(pair)))
    rule, port_specific = _firewall(index, src_ip, dst, proto, dst_port, src, audited)
    d = _by_rule_or_reach(index, rule, port_specific, dst, src)
    # Audit notes are rare: the common decision is returned as made, no copy.
    return replace(d, audit=tuple(audited)) if audited else d


def _by_rule_or_reach(
    index: DesiredReads,
    rule: FirewallRule | None,
    port_specific: bool,
    dst: Endpoint,
    src: Endpoint | None,
) -> Decision:
    """Steps 2 to 5 of the precedence, once the firewall rules were read."""
    if rule is not None:
        return Decision(Verdict(rule.action), rule_label(rule), "firewall", rule.id, port_specific)
    if src is None:
        return Decision(
            Verdict.DENY, "default deny (not from a daolinet container)", "default", None,
            port_specific,
        )
    if src.network == dst.network:
        return Decision(
            Verdict.ALLOW, f"same network {dst.network}", "network", None, port_specific
        )
    common = index.groups_of_network(src.network) & index.groups_of_network(dst.network)
    if common:
        group = min(common)
        return Decision(
            Verdict.ALLOW, f"group {group} ({src.network}, {dst.network})", "group", None,
            port_specific,
        )
    return Decision(Verdict.DENY, "default deny", "default", None, port_specific)


def decide_egress(index: DesiredReads, src: Endpoint) -> Decision:
    """May a container reach an address outside daolinet?  Its network's `external`."""
    network = index.network(src.network)
    if network is not None and network.external:
        return Decision(Verdict.ALLOW, f"network {network.name} is external", "network")
    return Decision(
        Verdict.DENY, f"network {src.network} has no external access", "default"
    )
