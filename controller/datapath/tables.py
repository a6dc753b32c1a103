"""The fixed layout of br-dl's flow tables, and the flows every switch always holds.

See docs/architecture.md ("Tables") for the picture; this module is its single
source of truth in code.
"""

from __future__ import annotations

from controller.datapath.messages import (
    CT,
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    FlowAdd,
    GotoTable,
    Meter,
    MeterAdd,
    Move,
    Output,
    SetField,
    match,
)
from controller.desired.models import DNS_PORT, GATEWAY_MAC, NAMES_RESPONDER
from controller.desired.policy import IP_PROTO_TCP, IP_PROTO_UDP

T_CLASSIFY = 0
T_ROUTE = 1
T_STATEFUL = 2
T_ALL = 0xFF  # OFPTT_ALL: every table (flow stats requests)

# table 0
PRIO_LOCAL_ARP = 200
PRIO_ARP_RESPONDER = 100
PRIO_NAMES = 65  # a container's DNS to the host's name responder and the answers back
PRIO_GUARD = 60  # in_port=P, ip, eth_src=MAC(P), nw_src=IP(P): the port's own address
PRIO_SPOOF = 55  # in_port=P, ip: anything else from a container port is spoofed
PRIO_IP = 50
# table 1
PRIO_CONNECTION = 100  # open pair flows (no conntrack)
# table 2 (after conntrack)
PRIO_ESTABLISHED = 100  # ct_state=+trk-new-inv, ct_mark=M: packets of committed connections
PRIO_GRANT = 90  # a granted (proto, port): commit with ct_mark=M
PRIO_STATEFUL_DENY = 80  # a denied (proto, port) or pair: drop, hard timeout
PRIO_MISS = 0
PRIO_METERED_MISS = 1  # table 2, in_port=P: to the controller through P's meter

# The conntrack zone of daolinet's connections (apart from the host's own zone 0).
CT_ZONE = 0xDA

COOKIE_KIND_SHIFT = 56
COOKIE_KIND_MASK = 0xFF << COOKIE_KIND_SHIFT
COOKIE_SERIAL_MASK = (1 << COOKIE_KIND_SHIFT) - 1
KIND_BASE = 0xD0
KIND_CONNECTION = 0xD1
KIND_DENY = 0xDD
KIND_GUARD = 0xD5  # anti-spoofing flows of a container port (table 0)
KIND_NAMES = 0xD6  # a container port's DNS flows (table 0); serial = the port number

BASE_COOKIE = KIND_BASE << COOKIE_KIND_SHIFT

ARP_REQUEST = 1
ARP_REPLY = 2


def cookie(kind: int, serial: int) -> int:
    return (kind << COOKIE_KIND_SHIFT) | (serial & COOKIE_SERIAL_MASK)


def cookie_kind(value: int) -> int:
    return (value & COOKIE_KIND_MASK) >> COOKIE_KIND_SHIFT


def arp_responder_actions() -> tuple[SetField | Move | Output, ...]:
    """Turn any ARP request into a reply "TPA is at GATEWAY_MAC", sent back.

    SPA and TPA are swapped through reg0: moving one onto the other first would
    lose an address (see ENVIRONMENT.md).
    """
    return (
        Move("eth_src", "eth_dst", 48),
        SetField("eth_src", GATEWAY_MAC),
        SetField("arp_op", ARP_REPLY),
        Move("arp_sha", "arp_tha", 48),
        SetField("arp_sha", GATEWAY_MAC),
        Move("arp_tpa", "reg0", 32),
        Move("arp_spa", "arp_tpa", 32),
        Move("reg0", "arp_spa", 32),
        Output(OFPP_IN_PORT),
    )


def base_flows() -> list[FlowAdd]:
    """The flows every br-dl holds whatever its containers and connections."""
    return [
        # The host kernel never ARPs into the bridge: it has permanent neighbours.
        FlowAdd(
            T_CLASSIFY,
            PRIO_LOCAL_ARP,
            match(in_port=OFPP_LOCAL, eth_type=ETH_TYPE_ARP),
            (),
            cookie=BASE_COOKIE,
        ),
        FlowAdd(
            T_CLASSIFY,
            PRIO_ARP_RESPONDER,
            match(eth_type=ETH_TYPE_ARP, arp_op=ARP_REQUEST),
            arp_responder_actions(),
            cookie=BASE_COOKIE,
        ),
        FlowAdd(
            T_CLASSIFY,
            PRIO_IP,
            match(eth_type=ETH_TYPE_IP),
            (GotoTable(T_ROUTE),),
            cookie=BASE_COOKIE,
        ),
        FlowAdd(T_CLASSIFY, PRIO_MISS, match(), (), cookie=BASE_COOKIE),
        # A packet no open pair flow takes goes through conntrack, so table 2 (and a
        # PacketIn from it) knows whether it is new or belongs to a known connection.
        FlowAdd(
            T_ROUTE,
            PRIO_MISS,
            match(eth_type=ETH_TYPE_IP),
            (CT(zone=CT_ZONE, table=T_STATEFUL),),
            cookie=BASE_COOKIE,
        ),
        FlowAdd(
            T_STATEFUL, PRIO_MISS, match(), (Output(OFPP_CONTROLLER),), cookie=BASE_COOKIE
        ),
    ]


def guard_flows(port_no: int, mac: str, ip: str, serial: int) -> list[FlowAdd]:
    """The fixed flows of one container port.

    Anti-spoofing: only its own MAC and IP get past table 0; the drop flow counts
    the spoofed packets (its n_packets, read by the flow dump).  PacketIn budget:
    its first packets reach the controller through its own meter (meter id = port
    number, see `packet_in_meter`), so one container's flood - denied, or aimed at
    nowhere - becomes at most a burst of PacketIns and cannot starve the others.
    """
    ck = cookie(KIND_GUARD, serial)
    return [
        FlowAdd(
            T_STATEFUL,
            PRIO_METERED_MISS,
            match(in_port=port_no),
            (Meter(port_no), Output(OFPP_CONTROLLER)),
            cookie=ck,
        ),
        FlowAdd(
            T_CLASSIFY,
            PRIO_GUARD,
            match(in_port=port_no, eth_type=ETH_TYPE_IP, eth_src=mac, ipv4_src=ip),
            (GotoTable(T_ROUTE),),
            cookie=ck,
        ),
        FlowAdd(
            T_CLASSIFY, PRIO_SPOOF, match(in_port=port_no, eth_type=ETH_TYPE_IP), (), cookie=ck
        ),
    ]


def names_cookie(port_no: int) -> int:
    """The cookie of one port's DNS flows: deleted by it (`FlowDelete` with an exact
    cookie mask), since the answers' flow matches LOCAL, not the port."""
    return cookie(KIND_NAMES, port_no)


def names_flows(port_no: int, mac: str, ip: str, local_mac: str) -> list[FlowAdd]:
    """A container port's DNS to the host's name responder, and the answers back.

    Docker's embedded DNS forwards what it does not know from inside the container's
    namespace, so the query leaves the port with the container's own address: it goes
    to the host (LOCAL) and the answer comes back to the port, with no PacketIn and
    no policy decision (the responder is part of the host, like the gateway; what it
    answers is policy's, docs/architecture.md "Names across hosts").  Only the
    port's own MAC and IP get here, as past the anti-spoofing flows."""
    ck = names_cookie(port_no)
    out: list[FlowAdd] = []
    for proto, name in ((IP_PROTO_UDP, "udp"), (IP_PROTO_TCP, "tcp")):
        out.append(FlowAdd(
            T_CLASSIFY, PRIO_NAMES,
            match(in_port=port_no, eth_type=ETH_TYPE_IP, eth_src=mac, ipv4_src=ip,
                  ipv4_dst=str(NAMES_RESPONDER), ip_proto=proto, **{f"{name}_dst": DNS_PORT}),
            (SetField("eth_dst", local_mac), Output(OFPP_LOCAL)),
            cookie=ck,
        ))
        out.append(FlowAdd(
            T_CLASSIFY, PRIO_NAMES,
            match(in_port=OFPP_LOCAL, eth_type=ETH_TYPE_IP, ipv4_src=str(NAMES_RESPONDER),
                  ipv4_dst=ip, ip_proto=proto, **{f"{name}_src": DNS_PORT}),
            (SetField("eth_src", GATEWAY_MAC), SetField("eth_dst", mac), Output(port_no)),
            cookie=ck,
        ))
    return out


def packet_in_meter(port_no: int, rate_pps: int, burst: int) -> MeterAdd:
    """The meter of a container port's PacketIns (see `guard_flows`)."""
    return MeterAdd(port_no, rate_pps, burst)
