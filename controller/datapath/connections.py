"""What the pure core tells the connection log (controller/connlog/): one `ConnEvent`
per decision on a first packet (allowed, denied), per connection revoked (by a policy
change, or its container or host removed), and per connection expired (its last
flow removed, adopted ones too), plus the packets a drop flow dropped when it goes.

The core only builds these values (a few attribute reads per PacketIn: it already
holds the decision and the endpoints); the runtime hands them to the log after
the core's lock is released.  See docs/architecture.md, "Connection log".
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Literal

from controller.desired.index import DesiredReads
from controller.desired.models import Endpoint
from controller.desired.policy import AuditNote, Decision

IPv4 = ipaddress.IPv4Address

EventKind = Literal["allowed", "denied", "revoked", "expired"]
# (container, network, host, site) of a daolinet end; None for an outside address
Identity = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class ConnEvent:
    """One line of the connection log as the core sees it (the log adds the time)."""

    event: EventKind
    src_ip: IPv4
    dst_ip: IPv4
    proto: int
    sport: int | None
    dport: int | None
    src: Identity | None
    dst: Identity | None
    verdict: str  # "allow" | "deny"
    reason: str  # the decision's text: "same network web", "firewall rule ..."
    kind: str  # what decided: "pair" | "firewall" | "network" | "group" | "default"
    rule_id: str | None  # the firewall rule that decided, if one did
    path: str | None  # "local", "underlay", "wireguard", "relay:R", "external"; None: denied
    observer: str  # the host whose switch sent the packet in (or held the flows)
    count: int = 1  # denied: packets this event stands for
    duration: float | None = None  # expired, revoked: seconds since the setup
    packets: int | None = None  # expired, revoked: packets its flows passed
    bytes: int | None = None
    # audited pair policies / firewall rules that would have decided it (and how)
    audit: tuple[AuditNote, ...] = ()
    # revoked: what ended it ("policy change: now deny by ...", "container b removed")
    ended_by: str | None = None


def identity(desired: DesiredReads, ep: Endpoint | None) -> Identity | None:
    """(container, network, host, site) of a container, None for an outside end: one
    shared tuple per distinct identity, so a million entries do not hold a million
    copies of the same few thousand (docs/performance.md, "Connection log")."""
    if ep is None:
        return None
    host = desired.host(ep.host)
    return _shared(ep.name, ep.network, ep.host, host.site if host is not None else "")


@functools.lru_cache(maxsize=1 << 16)
def _shared(container: str, network: str, host: str, site: str) -> Identity:
    return (container, network, host, site)


def decided(
    desired: DesiredReads,
    event: EventKind,
    pkt_src: IPv4,
    pkt_dst: IPv4,
    proto: int,
    ports: tuple[int | None, int | None],
    src: Endpoint | None,
    dst: Endpoint | None,
    d: Decision,
    path: str | None,
    observer: str,
) -> ConnEvent:
    """The event of a decision `d` on a first packet.  A container's address is its
    endpoint's (the same object in every entry), not the packet's (parsed anew)."""
    return ConnEvent(
        event, src.ip if src is not None and src.ip == pkt_src else pkt_src,
        dst.ip if dst is not None and dst.ip == pkt_dst else pkt_dst,
        proto, ports[0], ports[1],
        identity(desired, src), identity(desired, dst),
        d.verdict.value, d.reason, d.kind, d.rule_id, path, observer, audit=d.audit,
    )
