"""The flows of a connection: the legs it takes through the switches, the flow
records of a setup (open pair flows in table 1, or established and grant flows
after conntrack in table 2), the first packet's way on, and the small flow
vocabulary the other parts share (deliver, to the kernel, delete, a port's guard)."""

from __future__ import annotations

import ipaddress

from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.routing import Routing
from controller.datapath.events import PacketInfo
from controller.datapath.messages import (
    CT,
    CT_INV,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    ETH_TYPE_IP,
    OFPFF_SEND_FLOW_REM,
    OFPP_LOCAL,
    OFPP_TABLE,
    Action,
    FlowAdd,
    FlowDelete,
    MatchValue,
    MeterDelete,
    OFMessage,
    Output,
    PacketOut,
    SetField,
    match,
)
from controller.datapath.state import CoreState, FlowRecord, Grant, Leg, PairState, Switch
from controller.datapath.tables import (
    COOKIE_KIND_MASK,
    COOKIE_KIND_SHIFT,
    CT_ZONE,
    KIND_CONNECTION,
    KIND_GUARD,
    PRIO_CONNECTION,
    PRIO_ESTABLISHED,
    PRIO_GRANT,
    T_CLASSIFY,
    T_ROUTE,
    T_STATEFUL,
    guard_flows,
    names_cookie,
    names_flows,
    packet_in_meter,
)
from controller.desired.models import GATEWAY_MAC, Endpoint
from controller.desired.policy import IP_PROTO_TCP, IP_PROTO_UDP

IPv4 = ipaddress.IPv4Address
ALL_BITS = 2**64 - 1  # an exact cookie match


class FlowPlan(Part):
    """Plans a setup's flows (allocating their cookies); sends nothing."""

    def __init__(self, ctx: CoreContext, routing: Routing) -> None:
        super().__init__(ctx)
        self.routing = routing

    def legs(
        self, a_ip: IPv4, a: Endpoint | None, b_ip: IPv4, b: Endpoint | None
    ) -> list[Leg] | None:
        """Every (switch, direction) a connection between a and b passes."""
        if a is None or b is None:
            ep, ext = (a, b_ip) if a is not None else (b, a_ip)
            if ep is None:
                return None
            swe = self.state.switch_of(ep.host)
            if swe is None or swe.local_mac is None:
                return None
            pe = swe.port_no(ep.port)
            if pe is None:
                return None
            return [
                Leg(swe, ep.ip, ext, pe, to_kernel(swe.local_mac), None),
                Leg(swe, ext, ep.ip, OFPP_LOCAL, deliver(ep, pe), None),
            ]
        swa = self.state.switch_of(a.host)
        swb = self.state.switch_of(b.host)
        if swa is not None and swb is None and b.host in self.state.foreign:
            return self._half_legs(swa, a, b)
        if swb is not None and swa is None and a.host in self.state.foreign:
            return self._half_legs(swb, b, a)
        if swa is None or swb is None:
            return None
        pa, pb = swa.port_no(a.port), swb.port_no(b.port)
        if pa is None or pb is None:
            return None
        if swa is swb:
            return [
                Leg(swa, a.ip, b.ip, pa, deliver(b, pb), None),
                Leg(swa, b.ip, a.ip, pb, deliver(a, pa), None),
            ]
        if swa.local_mac is None or swb.local_mac is None:
            return None
        ha, hb = self.desired.host(a.host), self.desired.host(b.host)
        if ha is None or hb is None:
            return None
        hop = self.routing.next_hop
        return [
            Leg(swa, a.ip, b.ip, pa, to_kernel(swa.local_mac), (b.ip, hop(a.host, hb))),
            Leg(swa, b.ip, a.ip, OFPP_LOCAL, deliver(a, pa), None),
            Leg(swb, b.ip, a.ip, pb, to_kernel(swb.local_mac), (a.ip, hop(b.host, ha))),
            Leg(swb, a.ip, b.ip, OFPP_LOCAL, deliver(b, pb), None),
        ]

    def _half_legs(self, sw: Switch, mine: Endpoint, other: Endpoint) -> list[Leg] | None:
        """Our switch's two legs of a connection whose other end another replica
        serves: that replica installs its switch's legs when the first packet
        reaches it from its host's kernel (`Setups._from_kernel`), as after a restart."""
        port = sw.port_no(mine.port)
        hb = self.desired.host(other.host)
        if port is None or sw.local_mac is None or hb is None:
            return None
        return [
            Leg(sw, mine.ip, other.ip, port, to_kernel(sw.local_mac),
                (other.ip, self.routing.next_hop(mine.host, hb))),
            Leg(sw, other.ip, mine.ip, OFPP_LOCAL, deliver(mine, port), None),
        ]

    def records(
        self, legs: list[Leg], ps: PairState, grant: Grant
    ) -> list[tuple[Switch, FlowRecord]]:
        """The flows of a setup: open pair flows, or established + grant flows."""
        out: list[tuple[Switch, FlowRecord]] = []
        for leg in legs:
            base: dict[str, MatchValue] = {
                "in_port": leg.in_port,
                "eth_type": ETH_TYPE_IP,
                "ipv4_src": str(leg.src),
                "ipv4_dst": str(leg.dst),
            }
            if ps.mode == "open":
                out.append((leg.sw, self._record(T_ROUTE, PRIO_CONNECTION, base, leg.actions,
                                                 leg.needs_route)))
                continue
            est = dict(base, ct_state=(CT_TRK, CT_TRK | CT_NEW | CT_INV), ct_mark=ps.mark)
            out.append((leg.sw, self._record(T_STATEFUL, PRIO_ESTABLISHED, est, leg.actions,
                                             leg.needs_route)))
            g_src, proto, port = grant
            commit = (CT(zone=CT_ZONE, commit=True, mark=ps.mark), *leg.actions)
            if leg.src == g_src:  # the granted direction: may open (and re-commit)
                allow = dict(base, ct_state=(CT_TRK, CT_TRK))
                if proto is not None:
                    allow["ip_proto"] = proto
                    allow.update(l4(proto, port, "dst"))
                out.append((leg.sw, self._record(T_STATEFUL, PRIO_GRANT, allow, commit,
                                                 leg.needs_route)))
            else:  # replies of a granted connection conntrack knows under another mark
                adopt = dict(base, ct_state=(CT_TRK | CT_RPL, CT_TRK | CT_RPL))
                if proto is not None:
                    adopt["ip_proto"] = proto
                    adopt.update(l4(proto, port, "src"))
                out.append((leg.sw, self._record(T_STATEFUL, PRIO_GRANT, adopt, commit,
                                                 leg.needs_route)))
        return out

    def _record(
        self,
        table: int,
        priority: int,
        fields: dict[str, MatchValue],
        actions: tuple[Action, ...],
        needs_route: tuple[IPv4, IPv4] | None,
    ) -> FlowRecord:
        flow = FlowAdd(
            table,
            priority,
            match(**fields),
            actions,
            cookie=self.state.next_cookie(KIND_CONNECTION),
            idle_timeout=self.state.idle_timeout,
            flags=OFPFF_SEND_FLOW_REM,
        )
        return FlowRecord(flow, 0.0, needs_route)


def first_packet_out(
    sw: Switch, mode: str, dst: Endpoint | None, pkt: PacketInfo
) -> tuple[int, OFMessage] | None:
    """Send the packet that caused the setup on along its path.

    A stateful packet takes the tables again (after its flows), so that it is
    committed to conntrack like every later one.
    """
    if mode == "stateful":
        return sw.dpid, PacketOut(pkt.in_port, (Output(OFPP_TABLE),), pkt.data)
    if dst is not None and dst.host == sw.host:
        port = sw.port_no(dst.port)
        if port is None:
            return None
        return sw.dpid, PacketOut(pkt.in_port, deliver(dst, port), pkt.data)
    if sw.local_mac is None:
        return None
    return sw.dpid, PacketOut(pkt.in_port, to_kernel(sw.local_mac), pkt.data)


def guard(state: CoreState, ep: Endpoint, port_no: int) -> list[OFMessage]:
    """A port's meter, then the fixed flows that use it, and its DNS flows once the
    switch's LOCAL port (the way to the host's name responder) is known."""
    meter: list[OFMessage] = [
        MeterDelete(port_no),  # makes the ADD below idempotent
        packet_in_meter(port_no, state.packet_in_rate, state.packet_in_burst),
    ]
    fixed = list(guard_flows(port_no, ep.mac, str(ep.ip), state.next_token()))
    sw = state.switch_of(ep.host)
    if sw is not None and sw.local_mac is not None:
        fixed += names_flows(port_no, ep.mac, str(ep.ip), sw.local_mac)
    return meter + fixed


def delete_guard(port_no: int) -> tuple[FlowDelete, FlowDelete, MeterDelete]:
    """Remove a port's fixed flows (its metered miss flow goes with its meter) and its
    DNS flows (by their cookie: the answers' flow matches LOCAL, not the port)."""
    return (
        FlowDelete(
            T_CLASSIFY, match(in_port=port_no), cookie=KIND_GUARD << COOKIE_KIND_SHIFT,
            cookie_mask=COOKIE_KIND_MASK,
        ),
        FlowDelete(T_CLASSIFY, match(), cookie=names_cookie(port_no), cookie_mask=ALL_BITS),
        MeterDelete(port_no),
    )


def l4(proto: int, port: int | None, side: str) -> dict[str, MatchValue]:
    """The match of a TCP/UDP port (`side`: "src" or "dst"); nothing for others."""
    if port is None or proto not in (IP_PROTO_TCP, IP_PROTO_UDP):
        return {}
    name = "tcp" if proto == IP_PROTO_TCP else "udp"
    return {f"{name}_{side}": port}


def out_port(rec: FlowRecord) -> int | None:
    for a in rec.flow.actions:
        if isinstance(a, Output):
            return a.port
    return None


def deliver(dst: Endpoint, port: int) -> tuple[SetField | Output, ...]:
    return (SetField("eth_src", GATEWAY_MAC), SetField("eth_dst", dst.mac), Output(port))


def to_kernel(local_mac: str) -> tuple[SetField | Output, ...]:
    return (SetField("eth_dst", local_mac), Output(OFPP_LOCAL))


def delete_strict(flow: FlowAdd) -> FlowDelete:
    return FlowDelete(flow.table, flow.match, strict=True, priority=flow.priority)
