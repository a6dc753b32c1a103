"""Policy decisions of the datapath over one pinned desired state
(docs/architecture.md, "Policy enforcement"): the verdict for a connection, whether
a pair is fully open (cheap pair flows) or stateful, and whether a live pair is
still allowed after a policy change."""

from __future__ import annotations

import ipaddress

from controller.datapath.state import Pair, PairState
from controller.desired.index import DesiredReads
from controller.desired.models import Endpoint
from controller.desired.policy import (
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    Decision,
    Verdict,
    decide,
    decide_egress,
)

IPv4 = ipaddress.IPv4Address


def decide_connection(
    desired: DesiredReads,
    src_ip: IPv4,
    src: Endpoint | None,
    dst_ip: IPv4,
    dst: Endpoint | None,
    proto: int,
    port: int | None,
) -> Decision:
    """The datapath's verdict for src_ip -> dst_ip proto/port; either end may be outside.

    * container -> container: `policy.decide`;
    * container -> outside daolinet: `policy.decide_egress` (the network's `external`);
      an address inside a daolinet subnet that is no container is denied;
    * outside -> container: `policy.decide` as it is (rules with a CIDR or `any`
      source; default deny), so `GET /trace` from an outside address agrees.  The
      host kernel lets in only published ports (DNAT); this decides what of it
      reaches the container.
    """
    if dst is None:
        if src is None:
            return Decision(Verdict.DENY, "neither end is a daolinet container", "default")
        if any(dst_ip in n.subnet for n in desired.networks()):
            return Decision(Verdict.DENY, f"no container has address {dst_ip}", "default")
        return decide_egress(desired, src)
    return decide(desired, src_ip, dst, proto, port, src)


def fully_open(desired: DesiredReads, a: Endpoint, b: Endpoint) -> bool:
    """a may open anything to b (a verdict that is the same for every port)."""
    d = decide(desired, a.ip, b, 0, None, a)
    return d.verdict is Verdict.ALLOW and not d.port_specific


def open_both_ways(desired: DesiredReads, a: Endpoint | None, b: Endpoint | None) -> bool:
    """Both ends are containers and each may open anything to the other."""
    return (
        a is not None and b is not None
        and fully_open(desired, a, b) and fully_open(desired, b, a)
    )


def grant_port(d: Decision, proto: int, port: int | None) -> tuple[int | None, int | None]:
    """What a grant matches: every protocol and port, or this protocol (and port)."""
    if not d.port_specific:
        return (None, None)
    return (proto, port if proto in (IP_PROTO_TCP, IP_PROTO_UDP) else None)


def still_allowed(desired: DesiredReads, pair: Pair, ps: PairState) -> bool:
    """Whether a live pair keeps its flows under the current policy."""
    a_ip, b_ip = sorted(pair)
    ea, eb = desired.endpoint_by_ip(a_ip), desired.endpoint_by_ip(b_ip)
    if ps.mode == "open":
        return open_both_ways(desired, ea, eb)
    if open_both_ways(desired, ea, eb):
        return False  # now fully open: go back to cheap pair flows
    for g_src, proto, port in ps.grants:
        src, dst = (ea, eb) if g_src == a_ip else (eb, ea)
        dst_ip = b_ip if g_src == a_ip else a_ip
        d = decide_connection(desired, g_src, src, dst_ip, dst, proto or 0, port)
        if d.verdict is not Verdict.ALLOW:
            return False
        if proto is None and d.port_specific:
            return False  # granted for every port, now decided per port
    return True
