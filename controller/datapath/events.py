"""The events the runtime parses for the pure core (from OpenFlow messages): a
port, a PacketIn's fields, a dumped flow, a removed flow."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from controller.datapath.messages import Match
from controller.datapath.tables import T_STATEFUL

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class PortInfo:
    port_no: int
    name: str
    hw_addr: str


@dataclass(frozen=True)
class PacketInfo:
    """The fields of a PacketIn the core decides on (parsed by the shim)."""

    in_port: int
    eth_src: str
    ip_src: IPv4
    ip_dst: IPv4
    ip_proto: int
    data: bytes
    tp_src: int | None = None  # TCP/UDP ports (None for other protocols)
    tp_dst: int | None = None
    table: int = T_STATEFUL  # the table that sent it (table 2: after conntrack)
    ct_state: int = 0  # conntrack state bits (ofmsg.CT_*) when it came from table 2


@dataclass(frozen=True)
class DumpedFlow:
    cookie: int
    table: int
    priority: int
    match: Match
    out_port: int | None
    packet_count: int
    duration: float


@dataclass(frozen=True)
class RemovedFlow:
    """A FlowRemoved notice: the flow's cookie and what it passed while it lived."""

    cookie: int
    packet_count: int
    byte_count: int = 0
    duration: float = 0.0
