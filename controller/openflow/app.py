"""The os-ken shim: decode OpenFlow events, call the core, encode what it returns.

Nothing here decides anything.  `translate()` is the one place where the core's
plain messages become os-ken parser objects.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import threading
from typing import Any, ClassVar

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
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
from controller.datapath.runtime import DatapathRuntime
from controller.openflow.checksum import complete_l4_checksum

log = logging.getLogger(__name__)
ofp = ofproto_v1_3

TICK_SECONDS = 2.0


def translate(dp: Any, msg: OFMessage) -> Any:
    """The os-ken message for one of the core's messages."""
    if isinstance(msg, FlowAdd):
        instructions: list[Any] = [
            parser.OFPInstructionMeter(a.meter_id) for a in msg.actions if isinstance(a, Meter)
        ]
        actions = [_action(a) for a in msg.actions if not isinstance(a, GotoTable | Meter)]
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
            actions=[_action(a) for a in msg.actions],
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


def _action(action: Action) -> Any:
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


def _port(p: Any) -> PortInfo:
    name = p.name.decode() if isinstance(p.name, bytes) else str(p.name)
    return PortInfo(p.port_no, name, p.hw_addr)


class DaolinetApp(app_manager.OSKenApp):  # type: ignore[misc]
    """OpenFlow master of the switches this replica masters, slave of the others.

    One master of every switch while this replica leads (or is the only
    controller); with masters spread over replicas, of the switches assigned to it
    (docs/architecture.md, "Replicas", "Spread masters").  Only a switch's master
    sees its events and sends it messages; a slave keeps its connection so that it
    can take over with one role request.
    """

    OFP_VERSIONS: ClassVar[list[int]] = [ofp.OFP_VERSION]
    # Set by controller.main before os-ken instantiates the app.
    runtime: ClassVar[DatapathRuntime]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.datapaths: dict[int, Any] = {}
        self._parts: dict[tuple[int, int], list[Any]] = {}
        self._ports: dict[int, list[PortInfo]] = {}
        self._role_lock = threading.Lock()
        self._roles: dict[int, tuple[bool, int]] = {}  # dpid -> (master?, generation) sent
        self.runtime.send_openflow = self._send
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="daolinet-tick", daemon=True)
        self._ticker.start()
        self.runtime.listen_role(self._role_changed)

    def close(self) -> None:
        self._stop.set()

    # roles (docs/architecture.md, "Replicas") -----------------------------------------
    def _masters(self, dpid: int) -> bool:
        return self.runtime.is_master(dpid)

    def _role_changed(self, generation: int | None = None) -> None:
        """Roles changed (elected, deposed, a new assignment): ask every switch for
        the role we now want of it, and start or stop serving it."""
        changes: list[tuple[int, bool, bool]] = []
        with self._role_lock:
            for dp in self.datapaths.values():
                was = self._roles.get(dp.id, (False, -1))
                now = self._request_role(dp)
                if now != was:
                    changes.append((dp.id, was[0], now[0]))
        gained = [d for d, was, now in changes if now and not was]
        lost = [d for d, was, now in changes if was and not now]
        if gained:
            log.info("master of %d more switch(es), generation %d", len(gained),
                     self.runtime.role_generation())
        if lost:
            log.warning("no longer master of %d switch(es)", len(lost))
        for dpid in gained:
            self.runtime.handle(self.runtime.core.switch_connected, dpid)
        for dpid in lost:
            self.runtime.handle(self.runtime.core.switch_disconnected, dpid)

    def _request_role(self, dp: Any) -> tuple[bool, int]:
        """Send the role we want of `dp` if it changed (caller holds _role_lock)."""
        want = (self._masters(dp.id), self.runtime.role_generation())
        if self._roles.get(dp.id) != want:
            self._roles[dp.id] = want
            role = ofp.OFPCR_ROLE_MASTER if want[0] else ofp.OFPCR_ROLE_SLAVE
            dp.send_msg(parser.OFPRoleRequest(dp, role, want[1]))
        return want

    @set_ev_cls(  # type: ignore[untyped-decorator]
        ofp_event.EventOFPRoleReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER]
    )
    def on_role_reply(self, ev: Any) -> None:
        """The switch confirmed a role: the switches this replica masters, as they say."""
        msg = ev.msg
        mastered = (
            msg.role == ofp.OFPCR_ROLE_MASTER
            and msg.generation_id == self.runtime.role_generation()
        )
        self.runtime.confirm_master(msg.datapath.id, mastered)
        if mastered:
            log.info("switch %016x: master (generation %d)", msg.datapath.id,
                     msg.generation_id)

    @set_ev_cls(  # type: ignore[untyped-decorator]
        ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER]
    )
    def on_error(self, ev: Any) -> None:
        msg = ev.msg
        dpid = msg.datapath.id
        if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
            self.runtime.count_refusal("role")
            log.error("switch %016x refused our role request (code %d: a newer generation "
                      "leads it)", dpid, msg.code)
        elif msg.type == ofp.OFPET_BAD_REQUEST and msg.code == ofp.OFPBRC_IS_SLAVE:
            self.runtime.count_refusal("slave")
            log.warning("switch %016x refused a message: this replica is not its master",
                        dpid)
        else:
            log.warning("switch %016x: OpenFlow error type %d code %d", dpid, msg.type,
                        msg.code)

    def _send(self, dpid: int, msgs: list[OFMessage]) -> None:
        """Serialize a switch's messages and hand them to os-ken as one write.

        One queue hand-off and one syscall instead of one per message: this is on
        the first-packet path.  Nothing is sent unless this replica is master.
        """
        dp = self.datapaths.get(dpid)
        if dp is None or not self._masters(dpid) or not self.runtime.lease_valid():
            return
        bufs = []
        for msg in msgs:
            ofmsg = translate(dp, msg)
            dp.set_xid(ofmsg)
            ofmsg.serialize()
            bufs.append(bytes(ofmsg.buf))
        dp.send(b"".join(bufs))

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            if not any(self._masters(d) for d in list(self.datapaths)):
                continue
            try:
                self.runtime.handle_timed(self.runtime.core.tick)
            except Exception:
                log.exception("tick failed")

    # switch lifecycle ----------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        with self._role_lock:
            self.datapaths[dp.id] = dp
            self.runtime.switch_seen(dp.id, True)
            self._roles.pop(dp.id, None)  # a new connection: ask again
            # Under the lock: a role change either sees this switch or is seen here.
            master, _ = self._request_role(dp)
        log.info("switch %016x connected from %s (%s)", dp.id, dp.address,
                 "master" if master else "slave")
        if master:
            self.runtime.handle(self.runtime.core.switch_connected, dp.id)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_dead(self, ev: Any) -> None:
        dp = ev.datapath
        dpid: int | None = dp.id
        with self._role_lock:
            if dpid is None or self.datapaths.get(dpid) is not dp:
                return
            del self.datapaths[dpid]
            was_master = self._roles.pop(dpid, (False, 0))[0]
        self.runtime.switch_seen(dpid, False)
        self.runtime.confirm_master(dpid, False)
        log.info("switch %016x disconnected", dpid)
        if was_master:
            self.runtime.handle(self.runtime.core.switch_disconnected, dpid)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_port_desc(self, ev: Any) -> None:
        dpid = ev.msg.datapath.id
        if not self._masters(dpid):
            return
        self._ports.setdefault(dpid, []).extend(_port(p) for p in ev.msg.body)
        if ev.msg.flags & ofp.OFPMPF_REPLY_MORE:
            return
        ports = self._ports.pop(dpid, [])
        self.runtime.handle(self.runtime.core.ports_described, dpid, ports)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_port_status(self, ev: Any) -> None:
        msg = ev.msg
        if not self._masters(msg.datapath.id):
            return
        port = _port(msg.desc)
        if msg.reason == ofp.OFPPR_DELETE:
            self.runtime.handle(self.runtime.core.port_removed, msg.datapath.id, port)
        else:
            self.runtime.handle(self.runtime.core.port_added, msg.datapath.id, port)

    # traffic ---------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_packet_in(self, ev: Any) -> None:
        msg = ev.msg
        if not self._masters(msg.datapath.id):
            return
        m = msg.match
        ct_state = m.get("ct_state", 0)
        if isinstance(ct_state, tuple):
            ct_state = ct_state[0]
        info = parse_ipv4(m["in_port"], bytes(msg.data), msg.table_id, int(ct_state))
        if info is not None:
            self.runtime.handle_timed(self.runtime.core.packet_in, msg.datapath.id, info)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_flow_removed(self, ev: Any) -> None:
        msg = ev.msg
        if not self._masters(msg.datapath.id):
            return
        self.runtime.handle(
            self.runtime.core.flow_removed, msg.datapath.id, msg.cookie, msg.packet_count
        )

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        if not self._masters(msg.datapath.id):
            return
        key = (msg.datapath.id, msg.xid)
        self._parts.setdefault(key, []).extend(msg.body)
        if msg.flags & ofp.OFPMPF_REPLY_MORE:
            return
        body = self._parts.pop(key, [])
        flows = [f for f in (_dumped(s) for s in body) if f is not None]
        self.runtime.handle_timed(self.runtime.core.flows_dumped, msg.datapath.id, flows)


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


def _dumped(stat: Any) -> DumpedFlow | None:
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


