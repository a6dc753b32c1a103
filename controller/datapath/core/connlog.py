"""The core's events for the connection log (controller/datapath/connections.py;
docs/architecture.md, "Connection log"): a decision's on a first packet, the opening
of a connection adopted from a switch's flows (so its end is logged too), and an
ended connection's (expired, revoked) with what its removed flows passed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from controller.datapath.connections import ConnEvent, EventKind, decided
from controller.datapath.core.decisions import decide_connection
from controller.datapath.events import PacketInfo
from controller.datapath.messages import OFPP_LOCAL
from controller.datapath.state import FlowRecord, Pair, PairState, Switch
from controller.desired.index import DesiredReads
from controller.desired.models import Endpoint
from controller.desired.policy import Decision


def decision_event(
    desired: DesiredReads,
    kind: EventKind,
    observer: str,
    pkt: PacketInfo,
    src: Endpoint | None,
    dst: Endpoint | None,
    d: Decision,
    reply: bool,
    path: str | None,
) -> ConnEvent:
    """The event of decision `d` on `pkt` at `observer`'s switch, as the connection
    was opened (a reply packet is logged as the direction that opened it)."""
    if reply:
        return decided(desired, kind, pkt.ip_dst, pkt.ip_src, pkt.ip_proto,
                       (pkt.tp_dst, pkt.tp_src), dst, src, d, path, observer)
    return decided(desired, kind, pkt.ip_src, pkt.ip_dst, pkt.ip_proto,
                   (pkt.tp_src, pkt.tp_dst), src, dst, d, path, observer)


def account(ps: PairState, rec: FlowRecord, packets: int, nbytes: int, duration: float) -> None:
    """Add what a removed flow of `ps` passed.  Each packet is counted once: on the
    flow it took from a container port (a packet entering from the host's kernel was
    counted on its way out of the other host), or on every flow of a connection with
    an end outside daolinet (its only switch is ours)."""
    opened = ps.opened
    if opened is None:
        return
    if rec.in_port != OFPP_LOCAL or opened.src is None or opened.dst is None:
        ps.packets += packets
        ps.bytes += nbytes
    ps.duration = max(ps.duration, duration)


def closed(ps: PairState, kind: EventKind, duration: float | None) -> ConnEvent:
    """The event of a connection that ended: expired, or revoked."""
    assert ps.opened is not None
    return replace(ps.opened, event=kind, duration=duration, packets=ps.packets, bytes=ps.bytes)


def adopted(
    desired: DesiredReads, observer: str, ps: PairState, rec: FlowRecord, path: str
) -> ConnEvent:
    """The opening of a connection whose flows a switch held when we adopted them
    (a controller restart, a switch taken over): the direction its grant opened
    (else the adopted flow's), decided under today's policy, the reason saying it
    was adopted.  A pair flow tells no protocol: logged as protocol 0 ("any")."""
    if ps.grants:
        src_ip, proto, port = min(ps.grants, key=lambda g: (int(g[0]), g[1] or 0, g[2] or 0))
        (dst_ip,) = rec.pair - {src_ip} or {src_ip}
    else:
        src_ip, dst_ip, proto, port = rec.src, rec.dst, None, None
    src, dst = desired.endpoint_by_ip(src_ip), desired.endpoint_by_ip(dst_ip)
    d = decide_connection(desired, src_ip, src, dst_ip, dst, proto or 0, port)
    event = decided(desired, "allowed", src_ip, dst_ip, proto or 0, (None, port), src, dst,
                    d, path, observer)
    return replace(event, reason=f"{d.reason} (adopted from the switch's flows)")


def revoked(
    switches: Iterable[Switch], pair: Pair, ps: PairState, now: float | None, ended_by: str
) -> ConnEvent:
    """A revoked connection's event (before its flows are deleted): the packets its
    flows passed (the live ones as of their last dump), how long it lived, and what
    ended it."""
    since: float | None = None
    for sw in switches:
        for key in sw.by_pair.get(pair, ()):
            rec = sw.flows[key]
            account(ps, rec, rec.packet_count, 0, 0.0)
            since = rec.installed_at if since is None else min(since, rec.installed_at)
    duration = ps.duration
    if now is not None and since is not None:
        duration = max(duration, now - since)
    return replace(closed(ps, "revoked", round(duration, 3)), ended_by=ended_by)
