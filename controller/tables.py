"""The fixed layout of br-dl's flow tables, and the flows every switch always holds.

See docs/architecture.md ("Tables") for the picture; this module is its single
source of truth in code.
"""

from __future__ import annotations

from controller.models import GATEWAY_MAC
from controller.ofmsg import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    FlowAdd,
    GotoTable,
    Move,
    Output,
    SetField,
    match,
)

T_CLASSIFY = 0
T_ROUTE = 1

PRIO_LOCAL_ARP = 200
PRIO_ARP_RESPONDER = 100
PRIO_IP = 50
PRIO_CONNECTION = 100
PRIO_DENY = 90
PRIO_MISS = 0

COOKIE_KIND_SHIFT = 56
COOKIE_KIND_MASK = 0xFF << COOKIE_KIND_SHIFT
COOKIE_SERIAL_MASK = (1 << COOKIE_KIND_SHIFT) - 1
KIND_BASE = 0xD0
KIND_CONNECTION = 0xD1
KIND_DENY = 0xDD

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
        FlowAdd(T_ROUTE, PRIO_MISS, match(), (Output(OFPP_CONTROLLER),), cookie=BASE_COOKIE),
    ]
