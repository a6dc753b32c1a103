"""A simulated OpenFlow 1.3 switch that executes the core's messages (faucet's
fakeoftable idea): packets go in, verdicts come out, flows age with a given clock.

Only the semantics daolinet relies on are modelled: exact and masked match on
the fields the flows use, highest priority wins, goto_table, set_field, reg_move,
output, conntrack (`ct` with table/commit/mark; a per-switch table of committed
connections: ct_state new/est/rpl, ct_mark), idle and hard timeouts with
FlowRemoved for OFPFF_SEND_FLOW_REM flows, PacketOut to OFPP_TABLE.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.datapath.connections import ConnEvent
from controller.datapath.core.facade import Core
from controller.datapath.effects import Effects, KernelRouteDelta
from controller.datapath.events import DumpedFlow, PacketInfo, PortInfo, RemovedFlow
from controller.datapath.messages import (
    CT,
    CT_EST,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    OFPFF_SEND_FLOW_REM,
    OFPM_ALL,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    OFPP_TABLE,
    FlowAdd,
    FlowDelete,
    GotoTable,
    Meter,
    MeterAdd,
    MeterDelete,
    Move,
    Output,
    PacketOut,
    SetField,
)
from controller.datapath.needs import NeedsExport
from controller.datapath.state import CoreState
from controller.desired.index import DesiredIndex, DesiredView
from controller.desired.models import Endpoint, Host, KernelRoute, Network

Packet = dict[str, Any]


@dataclass
class Entry:
    flow: FlowAdd
    installed: float
    last_used: float
    packets: int = 0


@dataclass
class Verdict:
    kind: str  # "output", "controller", "drop"
    port: int | None = None
    packet: Packet | None = None
    table: int = 0  # where it ended


ConnKey = tuple[Any, ...]


def _conn_key(pkt: Packet) -> ConnKey:
    proto = pkt.get("ip_proto", 0)
    name = {6: "tcp", 17: "udp"}.get(proto)
    sport = pkt.get(f"{name}_src", 0) if name else 0
    dport = pkt.get(f"{name}_dst", 0) if name else 0
    return (pkt.get("ipv4_src"), pkt.get("ipv4_dst"), proto, sport, dport)


def _reverse(key: ConnKey) -> ConnKey:
    src, dst, proto, sport, dport = key
    return (dst, src, proto, dport, sport)


@dataclass
class MeterState:
    """A drop-band packets-per-second meter: a token bucket of `burst` packets."""

    rate: int
    burst: int
    tokens: float
    last: float

    def admit(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class FakeSwitch:
    dpid: int
    entries: list[Entry] = field(default_factory=list)
    now: float = 0.0
    conntrack: dict[ConnKey, int] = field(default_factory=dict)  # original tuple -> mark
    meters: dict[int, MeterState] = field(default_factory=dict)

    def ct_lookup(self, pkt: Packet) -> tuple[int, int]:
        key = _conn_key(pkt)
        if key in self.conntrack:
            return CT_TRK | CT_EST, self.conntrack[key]
        if _reverse(key) in self.conntrack:
            return CT_TRK | CT_EST | CT_RPL, self.conntrack[_reverse(key)]
        return CT_TRK | CT_NEW, 0

    def ct_commit(self, pkt: Packet, mark: int | None) -> None:
        key = _conn_key(pkt)
        if _reverse(key) in self.conntrack:
            key = _reverse(key)
        old = self.conntrack.get(key, 0)
        self.conntrack[key] = old if mark is None else mark

    def apply(self, msg: object) -> None:
        if isinstance(msg, FlowAdd):
            self.entries = [
                e
                for e in self.entries
                if not (
                    e.flow.table == msg.table
                    and e.flow.priority == msg.priority
                    and e.flow.match == msg.match
                )
            ]
            self.entries.append(Entry(msg, self.now, self.now))
        elif isinstance(msg, FlowDelete):
            self.entries = [e for e in self.entries if not _deleted_by(e.flow, msg)]
        elif isinstance(msg, MeterAdd):
            if msg.meter_id in self.meters:
                raise AssertionError(f"meter {msg.meter_id} exists (OFPMMFC_METER_EXISTS)")
            self.meters[msg.meter_id] = MeterState(msg.rate_pps, msg.burst, msg.burst, self.now)
        elif isinstance(msg, MeterDelete):
            gone = set(self.meters) if msg.meter_id == OFPM_ALL else {msg.meter_id}
            for meter_id in gone:
                self.meters.pop(meter_id, None)
            # As on a real switch, flows that use a deleted meter go with it.
            self.entries = [
                e for e in self.entries
                if not any(isinstance(a, Meter) and a.meter_id in gone for a in e.flow.actions)
            ]

    def flows(self, table: int | None = None, priority: int | None = None) -> list[FlowAdd]:
        return [
            e.flow
            for e in self.entries
            if (table is None or e.flow.table == table)
            and (priority is None or e.flow.priority == priority)
        ]

    def process(self, pkt: Packet) -> Verdict:
        pkt = dict(pkt)
        table = 0
        while True:
            entry = self._lookup(table, pkt)
            if entry is None:
                return Verdict("drop")
            entry.packets += 1
            entry.last_used = self.now
            nxt = None
            for action in entry.flow.actions:
                if isinstance(action, SetField):
                    pkt[action.field] = action.value
                elif isinstance(action, Move):
                    pkt[action.dst] = pkt.get(action.src)
                elif isinstance(action, GotoTable):
                    nxt = action.table
                elif isinstance(action, Meter):
                    if not self.meters[action.meter_id].admit(self.now):
                        return Verdict("metered")
                elif isinstance(action, CT):
                    if action.commit:
                        self.ct_commit(pkt, action.mark)
                    if action.table is not None:
                        state, mark = self.ct_lookup(pkt)
                        pkt = dict(pkt, ct_state=state, ct_mark=mark)
                        nxt = action.table
                elif isinstance(action, Output):
                    if action.port == OFPP_CONTROLLER:
                        return Verdict("controller", packet=pkt, table=table)
                    port = pkt["in_port"] if action.port == OFPP_IN_PORT else action.port
                    return Verdict("output", port, pkt, table)
            if nxt is None:
                return Verdict("drop")
            table = nxt

    def _lookup(self, table: int, pkt: Packet) -> Entry | None:
        best: Entry | None = None
        for e in self.entries:
            if e.flow.table != table:
                continue
            matches = all(
                (pkt.get(k, 0) & v[1]) == v[0] if isinstance(v, tuple) else pkt.get(k) == v
                for k, v in e.flow.match
            )
            if matches and (best is None or e.flow.priority > best.flow.priority):
                best = e
        return best

    def expire(self, now: float) -> list[Entry]:
        """Age flows to `now`; return the removed ones that asked for FlowRemoved."""
        self.now = now
        keep, notify = [], []
        for e in self.entries:
            f = e.flow
            idle = f.idle_timeout and now - e.last_used >= f.idle_timeout
            hard = f.hard_timeout and now - e.installed >= f.hard_timeout
            if idle or hard:
                if f.flags & OFPFF_SEND_FLOW_REM:
                    notify.append(e)
            else:
                keep.append(e)
        self.entries = keep
        return notify

    def dump(self, table: int | None = None) -> list[DumpedFlow]:
        out = []
        for e in self.entries:
            if table is not None and e.flow.table != table:
                continue
            outs = [a.port for a in e.flow.actions if isinstance(a, Output)]
            out.append(
                DumpedFlow(
                    e.flow.cookie,
                    e.flow.table,
                    e.flow.priority,
                    e.flow.match,
                    outs[0] if outs else None,
                    e.packets,
                    self.now - e.installed,
                )
            )
        return out


def _deleted_by(flow: FlowAdd, msg: FlowDelete) -> bool:
    if flow.table != msg.table:
        return False
    if msg.cookie_mask and (flow.cookie & msg.cookie_mask) != (msg.cookie & msg.cookie_mask):
        return False
    if msg.strict:
        return flow.match == msg.match and flow.priority == msg.priority
    fm = flow.match_dict()
    return all(fm.get(k) == v for k, v in msg.match)


@dataclass
class FakeAgent:
    """A host agent's kernel routes; acks deltas unless told to hold them."""

    host: str
    routes: dict[ipaddress.IPv4Address, KernelRoute] = field(default_factory=dict)
    auto_ack: bool = True
    held: list[KernelRouteDelta] = field(default_factory=list)

    def apply(self, delta: KernelRouteDelta) -> None:
        for r in delta.remove:
            self.routes.pop(r.dst, None)
        for r in delta.add:
            self.routes[r.dst] = r

    def via(self) -> dict[str, str]:
        return {str(d): str(r.via) for d, r in self.routes.items() if r.kind == "via"}


class Lab:
    """Hosts with fake switches and fake agents around one real Core.

    With `owners` (host -> replica name), every replica has its own core over the
    same desired state, masters the switches of its hosts only and holds their
    agents (masters spread over replicas); their exports are delivered to the core
    of the host they are for, and its answers back (`hold_exports`: queued until
    `deliver_exports()`).  `make_core` makes each core (a recording one, say).
    """

    def __init__(
        self,
        hosts: list[str],
        idle_timeout: int = 10,
        owners: dict[str, str] | None = None,
        make_core: Callable[[CoreState], Core] = Core,
    ) -> None:
        self.now = 0.0
        self.index = DesiredIndex()
        self.owners = owners or dict.fromkeys(hosts, "c0")
        self.cores = {
            name: make_core(CoreState(idle_timeout=idle_timeout))
            for name in sorted(set(self.owners.values()))
        }
        self.hold_exports = False
        self.batch_removals = False  # see advance()
        self.deltas: list[KernelRouteDelta] = []  # every delta sent to an agent, in order
        self.exports: list[tuple[Core, NeedsExport]] = []  # held
        self._import_refs: dict[int, tuple[Core, NeedsExport]] = {}
        self.switches: dict[str, FakeSwitch] = {}
        self.agents: dict[str, FakeAgent] = {}
        self.packet_outs: list[tuple[str, PacketOut]] = []
        self.resubmitted: list[tuple[str, Verdict]] = []  # PacketOuts that took the tables
        self.connections: list[ConnEvent] = []  # the connection log's events, in order
        self.nat: dict[str, list[Any]] = {}
        self._sent: dict[bytes, Packet] = {}
        self.next_port: dict[str, int] = {}
        for i, name in enumerate(hosts, start=1):
            self.index.put_host(
                Host(name=name, address=ipaddress.IPv4Address(f"198.18.0.{10 + i}"), dpid=i)
            )
            self.switches[name] = FakeSwitch(i)
            self.agents[name] = FakeAgent(name)
            self.next_port[name] = 1
        for name, core in self.cores.items():
            foreign = {h for h, o in self.owners.items() if o != name}
            self.run(core.set_foreign(self.view(), foreign, 1), core)
        for name in hosts:
            self.connect(name)

    # wiring ------------------------------------------------------------------------
    def view(self) -> DesiredView:
        """The desired state's latest version: what the runtime pins for each call."""
        return self.index.view()

    def host_of(self, dpid: int) -> str:
        return next(h for h, s in self.switches.items() if s.dpid == dpid)

    @property
    def core(self) -> Core:
        """The first replica's core (the only one without `owners`)."""
        return next(iter(self.cores.values()))

    @core.setter
    def core(self, core: Core) -> None:
        """A restarted controller: a fresh core in place of the first one."""
        self.cores[next(iter(self.cores))] = core

    def core_of(self, host: str) -> Core:
        return self.cores[self.owners[host]]

    def run(self, fx: Effects, by: Core | None = None) -> None:
        """Carry out what core `by` (default: the first) returned.  A core may only
        write to the switches and agents of its own hosts."""
        by = by or self.core
        self.connections.extend(fx.connections)
        for dpid, msg in fx.messages:
            host = self.host_of(dpid)
            assert self.core_of(host) is by, f"a core wrote to {host}, mastered elsewhere"
            if isinstance(msg, PacketOut):
                self.packet_outs.append((host, msg))
                pkt = self._sent.get(msg.data)
                if Output(OFPP_TABLE) in msg.actions and pkt is not None:
                    again = dict(pkt, in_port=msg.in_port)
                    self.resubmitted.append((host, self.switches[host].process(again)))
            else:
                self.switches[host].apply(msg)
        for host in fx.nat:
            assert self.core_of(host) is by, f"a core set the NAT of {host}"
        self.nat.update(fx.nat)
        for delta in fx.deltas:
            assert self.core_of(delta.host) is by, f"a core routed on {delta.host}"
            self.deltas.append(delta)
            agent = self.agents[delta.host]
            if agent.auto_ack:
                agent.apply(delta)
                if delta.token is not None:
                    self.run(by.routes_acked(self.view(), delta.host, delta.token, self.now), by)
            else:
                agent.held.append(delta)
        for export in fx.exports:
            assert self.core_of(export.host) is not by, "an export to its own host"
            self.exports.append((by, export))
        for done in fx.imports_done:
            sender, export = self._import_refs.pop(done.ref)
            self.run(sender.exports_acked(self.view(), export.host, export.token, done.ok,
                                          self.now), sender)
        if not self.hold_exports:
            self.deliver_exports()

    def deliver_exports(self) -> None:
        while self.exports:
            sender, export = self.exports.pop(0)
            ref = len(self._import_refs) + 10 * export.token
            self._import_refs[ref] = (sender, export)
            owner = self.core_of(export.host)
            self.run(owner.needs_imported(self.view(), export.host, export.generation,
                                          export.token, dict(export.needs), ref), owner)

    def release(self, host: str, ok: bool = True) -> None:
        agent = self.agents[host]
        core = self.core_of(host)
        held, agent.held = agent.held, []
        for delta in held:
            if ok:
                agent.apply(delta)
            if delta.token is not None:
                if ok:
                    self.run(core.routes_acked(self.view(), host, delta.token, self.now), core)
                else:
                    self.run(core.routes_failed(self.view(), host, delta.token, self.now), core)

    def connect(self, host: str) -> None:
        sw = self.switches[host]
        core = self.core_of(host)
        self.run(core.switch_connected(self.view(), sw.dpid), core)
        ports = [PortInfo(OFPP_LOCAL, "br-dl", f"aa:00:00:00:00:{sw.dpid:02x}")]
        ports += [
            PortInfo(ep_port, ep.port, "fe:00:00:00:00:01")
            for ep_port, ep in self._ports(host)
        ]
        self.run(core.ports_described(self.view(), sw.dpid, ports), core)
        self.run(core.flows_dumped(self.view(), sw.dpid, sw.dump(), self.now), core)
        (snap,) = core.snapshot(self.view(), host).snapshots
        agent = self.agents[host]
        agent.routes = {r.dst: r for r in snap.routes}
        self.run(core.routes_acked(self.view(), host, snap.token, self.now), core)

    def hand_over(self, host: str, to: str, generation: int) -> None:
        """Another replica becomes master of `host`'s switch (and holds its agent)."""
        self.owners[host] = to
        for name, core in self.cores.items():
            foreign = {h for h, o in self.owners.items() if o != name}
            self.run(core.set_foreign(self.view(), foreign, generation), core)
        self.connect(host)

    def _ports(self, host: str) -> list[tuple[int, Endpoint]]:
        return [(self.port_of(ep), ep) for ep in self.index.endpoints(host=host)]

    def port_of(self, ep: Endpoint) -> int:
        return int(ep.port.removeprefix("p"))

    # desired state -------------------------------------------------------------------
    def network(self, name: str, cidr: str) -> None:
        net = ipaddress.IPv4Network(cidr)
        self.index.put_network(
            Network(id=name, name=name, subnet=net, gateway=next(net.hosts()))
        )

    def container(self, host: str, name: str, network: str, ip: str) -> Endpoint:
        port_no = self.next_port[host]
        self.next_port[host] += 1
        addr = ipaddress.IPv4Address(ip)
        ep = Endpoint(
            id=name,
            name=name,
            network=network,
            host=host,
            ip=addr,
            mac="02:da:" + ":".join(f"{b:02x}" for b in addr.packed),
            port=f"p{port_no}",
        )
        self.index.put_endpoint(ep)
        sw = self.switches[host]
        port = PortInfo(port_no, ep.port, "fe:00:00:00:00:01")
        self.run(self.core_of(host).port_added(self.view(), sw.dpid, port), self.core_of(host))
        for core in self.cores.values():
            self.run(core.endpoint_added(self.view(), ep), core)
        return ep

    def remove(self, ep: Endpoint) -> None:
        self.index.drop_endpoint(ep.id)
        for core in self.cores.values():
            self.run(core.endpoint_removed(self.view(), ep, self.now), core)

    def remove_host(self, host: str) -> None:
        """`DELETE /hosts/{host}?force=true`: its endpoints and the host go from the
        desired state in one version, then each core hears of every endpoint removed
        and of the host removed, in that order (as the inventory announces them)."""
        h = self.index.host(host)
        assert h is not None
        gone = self.index.endpoints(host=host)
        with self.index.batch():
            for ep in gone:
                self.index.drop_endpoint(ep.id)
            self.index.drop_host(host)
        for core in self.cores.values():
            for ep in gone:
                self.run(core.endpoint_removed(self.view(), ep, self.now), core)
            self.run(core.host_removed(self.view(), h, self.now), core)

    def policy_changed(self) -> None:
        for core in self.cores.values():
            self.run(core.policy_changed(self.view(), self.now), core)

    # traffic -------------------------------------------------------------------------
    def ip_packet(self, src: Endpoint, dst_ip: str, proto: int = 1) -> Packet:
        return {
            "in_port": self.port_of(src),
            "eth_type": 0x0800,
            "eth_src": src.mac,
            "eth_dst": "02:da:00:00:00:01",
            "ipv4_src": str(src.ip),
            "ipv4_dst": dst_ip,
            "ip_proto": proto,
        }

    def tcp_packet(self, src: Endpoint, dst_ip: str, dport: int, sport: int = 40000) -> Packet:
        return dict(self.ip_packet(src, dst_ip, 6), tcp_src=sport, tcp_dst=dport)

    def reply(self, pkt: Packet, src: Endpoint, in_port: int | None = None) -> Packet:
        """The answer of `src` to `pkt` (addresses and ports swapped)."""
        out = dict(self.ip_packet(src, str(pkt["ipv4_src"]), pkt.get("ip_proto", 1)))
        if in_port is not None:
            out["in_port"] = in_port
        for proto in ("tcp", "udp"):
            if f"{proto}_src" in pkt:
                out[f"{proto}_src"], out[f"{proto}_dst"] = pkt[f"{proto}_dst"], pkt[f"{proto}_src"]
        return out

    def send(self, host: str, pkt: Packet) -> Verdict:
        """Inject a packet at a switch; a miss goes through the core like a PacketIn."""
        sw = self.switches[host]
        verdict = sw.process(pkt)
        if verdict.kind == "controller":
            self.packet_in(host, pkt, verdict.table, verdict.packet or pkt)
        return verdict

    def packet_in(self, host: str, pkt: Packet, table: int = 1,
                  seen: Packet | None = None) -> Effects:
        """`host`'s switch sends `pkt` to the controller as a PacketIn from `table`,
        whatever its flows and meters say (as a switch without meters, or a rogue
        one, may); what the core answered, carried out.  `seen`: the packet as the
        switch saw it then (its ct_state)."""
        sw = self.switches[host]
        proto = pkt.get("ip_proto", 0)
        name = {6: "tcp", 17: "udp"}.get(proto, "")
        data = f"pkt{len(self._sent)}".encode()
        self._sent[data] = dict(pkt)
        info = PacketInfo(
            in_port=pkt["in_port"],
            eth_src=pkt["eth_src"],
            ip_src=ipaddress.IPv4Address(pkt["ipv4_src"]),
            ip_dst=ipaddress.IPv4Address(pkt["ipv4_dst"]),
            ip_proto=proto,
            data=data,
            tp_src=pkt.get(f"{name}_src"),
            tp_dst=pkt.get(f"{name}_dst"),
            table=table,
            ct_state=int((seen or pkt).get("ct_state", 0)),
        )
        core = self.core_of(host)
        fx = core.packet_in(self.view(), sw.dpid, info, self.now)
        self.run(fx, core)
        return fx

    def through_kernels(self, src: str, dst: str, pkt: Packet) -> Verdict:
        """A packet `src`'s switch sent to its LOCAL port, routed by the two hosts'
        kernels into `dst`'s switch.  Dropped without a route on `src`, and, through
        WireGuard, unless `dst` holds the sender's address (its allowed-ips)."""
        route = self.agents[src].routes.get(ipaddress.IPv4Address(pkt["ipv4_dst"]))
        if route is None or route.kind not in ("via", "wg"):
            return Verdict("drop")
        if route.kind == "wg":
            back = self.agents[dst].routes.get(ipaddress.IPv4Address(pkt["ipv4_src"]))
            if back is None or back.kind != "wg":
                return Verdict("drop")
        return self.send(dst, dict(pkt, in_port=OFPP_LOCAL))

    def advance(self, seconds: float) -> None:
        """Age every flow by `seconds`; the notices of the flows that went reach
        their switch's core one at a time, or with `batch_removals` as one batch
        per switch (the os-ken app's, controller/openflow/removals.py)."""
        self.now += seconds
        for host, sw in self.switches.items():
            core = self.core_of(host)
            notices = [
                RemovedFlow(e.flow.cookie, e.packets, e.packets * 100, self.now - e.installed)
                for e in sw.expire(self.now)
            ]
            batches = [notices] if self.batch_removals and notices else [[n] for n in notices]
            for batch in batches:
                self.run(core.flows_removed(self.view(), sw.dpid, batch), core)
