"""The codec between the core's plain values and os-ken: `translate()` turns a
message value (controller/datapath/messages.py) into an os-ken parser object; the
decoders turn what a switch sent (ports, packets, flow dumps) into the core's values.

The one place where the core's plain messages become os-ken objects, so the core
never imports os-ken.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.datapath.events import DumpedFlow, PacketInfo, PortInfo
from controller.datapath.messages import (
    CT,
    ETH_TYPE_IP,
    OFPP_CONTROLLER,
    Action,
    FlowAdd,
    FlowDelete,
    GotoTable,
    Meter,
    MeterAdd,
    MeterDelete,
    Move,
    OFMessage,
    Output,
    PacketOut,
    RequestFlowStats,
    RequestPortDesc,
    SetField,
    match,
)
from controller.openflow.checksum import complete_l4_checksum

ofp = ofproto_v1_3


def translate(dp: Any, msg: OFMessage) -> Any:
    """The os-ken message for one of the core's messages."""
    if isinstance(msg, FlowAdd):
        instructions: list[Any] = [
            parser.OFPInstructionMeter(a.meter_id) for a in msg.actions if isinstance(a, Meter)
        ]
        actions = [encode_action(a) for a in msg.actions if not isinstance(a, GotoTable | Meter)]
        if actions:
            instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
        instructions += [
            parser.OFPInstructionGotoTable(a.table) for a in msg.actions if isinstance(a, GotoTable)
        ]
        return parser.OFPFlowMod(
            dp,
            cookie=msg.cookie,
            table_id=msg.table,
            command=ofp.OFPFC_ADD,
            idle_timeout=msg.idle_timeout,
            hard_timeout=msg.hard_timeout,
            priority=msg.priority,
            buffer_id=ofp.OFP_NO_BUFFER,
            flags=msg.flags,
            match=parser.OFPMatch(**dict(msg.match)),
            instructions=instructions,
        )
    if isinstance(msg, FlowDelete):
        return parser.OFPFlowMod(
            dp,
            cookie=msg.cookie,
            cookie_mask=msg.cookie_mask,
            table_id=msg.table,
            command=ofp.OFPFC_DELETE_STRICT if msg.strict else ofp.OFPFC_DELETE,
            priority=msg.priority,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=parser.OFPMatch(**dict(msg.match)),
        )
    if isinstance(msg, PacketOut):
        return parser.OFPPacketOut(
            dp,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=msg.in_port,
            actions=[encode_action(a) for a in msg.actions],
            # A packet from a port with checksum offload has only a partial TCP/UDP
            # checksum, and a PacketOut carries no offload metadata (checksum.py).
            data=complete_l4_checksum(msg.data),
        )
    if isinstance(msg, RequestPortDesc):
        return parser.OFPPortDescStatsRequest(dp, 0)
    if isinstance(msg, RequestFlowStats):
        return parser.OFPFlowStatsRequest(
            dp,
            0,
            msg.table,
            ofp.OFPP_ANY,
            ofp.OFPG_ANY,
            msg.cookie,
            msg.cookie_mask,
            parser.OFPMatch(),
        )
    if isinstance(msg, MeterAdd):
        # MODIFY would fail on a missing meter and ADD on an existing one; the core
        # deletes every meter when a switch connects, so ADD is the one that fits.
        return parser.OFPMeterMod(
            dp,
            command=ofp.OFPMC_ADD,
            flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
            meter_id=msg.meter_id,
            bands=[parser.OFPMeterBandDrop(rate=msg.rate_pps, burst_size=msg.burst)],
        )
    if isinstance(msg, MeterDelete):
        return parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=msg.meter_id)
    raise TypeError(f"no translation for {msg!r}")


NX_CT_RECIRC_NONE = 0xFF
NX_CT_F_COMMIT = 1


def encode_action(action: Action) -> Any:
    if isinstance(action, CT):
        nested = [] if action.mark is None else [parser.OFPActionSetField(ct_mark=action.mark)]
        return parser.NXActionCT(
            flags=NX_CT_F_COMMIT if action.commit else 0,
            zone_src="",
            zone_ofs_nbits=action.zone,
            recirc_table=NX_CT_RECIRC_NONE if action.table is None else action.table,
            alg=0,
            actions=nested,
        )
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(
            src_field=action.src, dst_field=action.dst, n_bits=action.n_bits
        )
    if isinstance(action, Output):
        max_len = ofp.OFPCML_NO_BUFFER if action.port == OFPP_CONTROLLER else 0
        return parser.OFPActionOutput(action.port, max_len)
    raise TypeError(f"no translation for action {action!r}")


def port_info(p: Any) -> PortInfo:
    """The core's value of an os-ken port description."""
    name = p.name.decode() if isinstance(p.name, bytes) else str(p.name)
    return PortInfo(p.port_no, name, p.hw_addr)


def parse_ipv4(
    in_port: int, data: bytes, table: int = 2, ct_state: int = 0
) -> PacketInfo | None:
    """The fields the core needs from an untagged Ethernet/IPv4 frame, else None.

    Hand-parsed with struct: os-ken's packet library decodes every layer and
    costs more than the rest of the PacketIn path.
    """
    if len(data) < 34:
        return None
    (ethertype,) = struct.unpack_from("!H", data, 12)
    if ethertype != ETH_TYPE_IP or data[14] >> 4 != 4:
        return None
    proto = data[23]
    tp_src = tp_dst = None
    l4 = 14 + (data[14] & 0x0F) * 4
    (frag,) = struct.unpack_from("!H", data, 20)
    if proto in (6, 17) and not frag & 0x1FFF and len(data) >= l4 + 4:
        tp_src, tp_dst = struct.unpack_from("!HH", data, l4)
    return PacketInfo(
        in_port=in_port,
        eth_src=":".join(f"{b:02x}" for b in data[6:12]),
        ip_src=ipaddress.IPv4Address(data[26:30]),
        ip_dst=ipaddress.IPv4Address(data[30:34]),
        ip_proto=proto,
        data=data,
        tp_src=tp_src,
        tp_dst=tp_dst,
        table=table,
        ct_state=ct_state,
    )


def dumped_flow(stat: Any) -> DumpedFlow | None:
    """The core's value of one flow of a flow dump (os-ken `OFPFlowStats`)."""
    fields = {}
    for key, value in stat.match.items():
        if isinstance(value, tuple | list):
            value = (int(value[0]), int(value[1]))
        fields[key] = value
    out = None
    for inst in stat.instructions:
        for action in getattr(inst, "actions", []):
            if isinstance(action, parser.OFPActionOutput):
                out = action.port
    return DumpedFlow(
        cookie=stat.cookie,
        table=stat.table_id,
        priority=stat.priority,
        match=match(**fields),
        out_port=out,
        packet_count=stat.packet_count,
        duration=stat.duration_sec + stat.duration_nsec / 1e9,
    )
