"""The core's events for the connection log (controller/datapath/connections.py;
docs/architecture.md, "Connection log"): a decision's on a first packet, and an
ended connection's (expired, revoked) with what its removed flows passed."""

from __future__ import annotations

from dataclasses import replace

from controller.datapath.connections import ConnEvent, EventKind, decided
from controller.datapath.events import PacketInfo
from controller.datapath.messages import OFPP_LOCAL
from controller.datapath.state import FlowRecord, PairState
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
