"""OpenFlow messages as plain data, independent of os-ken.

The core returns these; the os-ken shim (controller/openflow/app.py) translates them into
os-ken parser objects, and the unit tests execute them on a simulated flow table.
Only what daolinet uses is modelled, so the translation stays small and total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Reserved port numbers of OpenFlow 1.3.
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPP_ANY = 0xFFFFFFFF
OFPP_TABLE = 0xFFFFFFF9

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806

# Match fields by their OpenFlow 1.3 OXM names (as os-ken spells them).
# Field names are OpenFlow 1.3 OXM names as os-ken spells them (in_port, eth_type,
# arp_op, ipv4_src, ipv4_dst, ...).
# A masked field is (value, mask), e.g. ct_state=(TRK, TRK | INV).
MatchValue = int | str | tuple[int, int]
Match = tuple[tuple[str, MatchValue], ...]


@dataclass(frozen=True)
class SetField:
    field: Literal["eth_src", "eth_dst", "arp_op", "arp_sha", "arp_tha", "arp_spa", "arp_tpa"]
    value: int | str


@dataclass(frozen=True)
class Move:
    """Copy n_bits from one field to another (Nicira reg_move)."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True)
class Output:
    port: int


@dataclass(frozen=True)
class GotoTable:
    table: int


@dataclass(frozen=True)
class CT:
    """Send the packet through conntrack (Nicira ct).

    `table`: continue in that table with the ct_* fields set (the current action list
    goes on with the untracked packet, so give `table` only as the last action).
    `commit`: remember the connection; `mark` is then written to its ct_mark.
    """

    zone: int
    table: int | None = None
    commit: bool = False
    mark: int | None = None


@dataclass(frozen=True)
class Meter:
    """Pass the packet through meter `meter_id` first (an OpenFlow 1.3 instruction)."""

    meter_id: int


Action = SetField | Move | Output | GotoTable | CT | Meter

# Bits of the ct_state match field.
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20

OFPFF_SEND_FLOW_REM = 1


@dataclass(frozen=True)
class FlowAdd:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0

    def match_dict(self) -> dict[str, MatchValue]:
        return dict(self.match)


@dataclass(frozen=True)
class FlowDelete:
    """Delete flows of a table whose match contains `match` (strict: equals it)."""

    table: int
    match: Match
    strict: bool = False
    priority: int = 0
    cookie: int = 0
    cookie_mask: int = 0


@dataclass(frozen=True)
class PacketOut:
    in_port: int
    actions: tuple[Action, ...]
    data: bytes


@dataclass(frozen=True)
class RequestPortDesc:
    pass


@dataclass(frozen=True)
class RequestFlowStats:
    table: int
    cookie: int = 0
    cookie_mask: int = 0


OFPM_ALL = 0xFFFFFFFF


@dataclass(frozen=True)
class MeterAdd:
    """A packets-per-second meter whose excess is dropped (add or replace)."""

    meter_id: int
    rate_pps: int
    burst: int


@dataclass(frozen=True)
class MeterDelete:
    """Delete a meter (OFPM_ALL: every meter); flows that use it go with it."""

    meter_id: int


OFMessage = (
    FlowAdd
    | FlowDelete
    | PacketOut
    | RequestPortDesc
    | RequestFlowStats
    | MeterAdd
    | MeterDelete
)


def match(**fields: MatchValue) -> Match:
    """A match as a hashable, ordered tuple: match(in_port=1, eth_type=0x800)."""
    return tuple(sorted(fields.items()))
