"""The pure core of the controller: events in, OpenFlow messages and route requests out.

Nothing here sends anything or reads the clock: every handler takes `now` and
returns an `Effects` value the shim carries out.  The per-connection state it
keeps (flows per switch, routes announced to agents) is a cache of what the
switches hold and is rebuilt from their flow dumps after a restart.

Kernel routes are derived, never stored separately: a host must hold
`B/32 via host(B)` exactly while one of its flows (live or waiting to be
installed) sends B's traffic to the LOCAL port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.desired import DesiredIndex
from controller.models import GATEWAY_MAC, Endpoint, KernelRoute
from controller.ofmsg import (
    ETH_TYPE_IP,
    OFPFF_SEND_FLOW_REM,
    OFPP_LOCAL,
    FlowAdd,
    FlowDelete,
    Match,
    OFMessage,
    Output,
    PacketOut,
    RequestFlowStats,
    RequestPortDesc,
    SetField,
    match,
)
from controller.policy import Verdict, decide
from controller.tables import (
    KIND_CONNECTION,
    KIND_DENY,
    PRIO_CONNECTION,
    PRIO_DENY,
    T_ROUTE,
    base_flows,
    cookie,
    cookie_kind,
)

IPv4 = ipaddress.IPv4Address
IP_PROTO_ICMP = 1

# A setup whose routes are not acknowledged within this time fails (its flows are
# dropped and the next packet tries again), so a dead agent cannot wedge a pair.
SETUP_TIMEOUT = 3.0
# How many packets of one pair are held while its routes are being installed.
PENDING_PACKETS = 16
# A FlowRemoved notice can race a re-install; a flow missing from a dump is only
# believed gone when it was installed longer ago than this.
DUMP_GRACE = 2.0


# --- events ------------------------------------------------------------------------
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


@dataclass(frozen=True)
class DumpedFlow:
    cookie: int
    priority: int
    in_port: int
    ip_src: IPv4
    ip_dst: IPv4
    out_port: int | None
    packet_count: int
    duration: float


@dataclass(frozen=True)
class KernelRouteDelta:
    host: str
    token: int | None
    add: tuple[KernelRoute, ...] = ()
    remove: tuple[KernelRoute, ...] = ()


@dataclass
class Effects:
    messages: list[tuple[int, OFMessage]] = field(default_factory=list)
    deltas: list[KernelRouteDelta] = field(default_factory=list)
    synced_hosts: list[str] = field(default_factory=list)

    def send(self, dpid: int, *msgs: OFMessage) -> None:
        self.messages.extend((dpid, m) for m in msgs)

    def extend(self, other: Effects) -> None:
        self.messages.extend(other.messages)
        self.deltas.extend(other.deltas)
        self.synced_hosts.extend(other.synced_hosts)


# --- state -------------------------------------------------------------------------
FlowKey = tuple[int, IPv4, IPv4]  # (in_port, ip_src, ip_dst)


@dataclass
class FlowRecord:
    flow: FlowAdd
    installed_at: float
    needs_route: tuple[IPv4, IPv4] | None  # (dst, via) this flow needs in the kernel
    pending: bool = False
    packet_count: int = 0
    last_active: float = 0.0


@dataclass
class Switch:
    dpid: int
    host: str
    ports: dict[str, PortInfo] = field(default_factory=dict)
    local_mac: str | None = None
    synced: bool = False
    flows: dict[FlowKey, FlowRecord] = field(default_factory=dict)

    def port_no(self, name: str) -> int | None:
        info = self.ports.get(name)
        return info.port_no if info else None

    def port_name(self, port_no: int) -> str | None:
        for info in self.ports.values():
            if info.port_no == port_no:
                return info.name
        return None


@dataclass
class HostRoutes:
    announced: dict[IPv4, IPv4] = field(default_factory=dict)  # dst -> via
    unacked: dict[IPv4, int] = field(default_factory=dict)  # dst -> token in flight


@dataclass
class PendingSetup:
    pair: frozenset[IPv4]
    waiting: set[int]
    flows: list[tuple[int, FlowKey]]  # (dpid, key) of the pending flow records
    packets: list[tuple[int, OFMessage]]
    started: float


@dataclass
class Counters:
    packet_ins: int = 0
    setups: int = 0
    denials: int = 0
    failed_setups: int = 0
    setup_latency: list[float] = field(default_factory=list)


@dataclass
class CoreState:
    idle_timeout: int = 10
    deny_hold: int = 3
    switches: dict[int, Switch] = field(default_factory=dict)
    routes: dict[str, HostRoutes] = field(default_factory=dict)
    pending: dict[frozenset[IPv4], PendingSetup] = field(default_factory=dict)
    serial: int = 1
    counters: Counters = field(default_factory=Counters)

    def next_cookie(self, kind: int) -> int:
        self.serial += 1
        return cookie(kind, self.serial)

    def next_token(self) -> int:
        self.serial += 1
        return self.serial

    def switch_of(self, host: str) -> Switch | None:
        for sw in self.switches.values():
            if sw.host == host:
                return sw
        return None

    def host_routes(self, host: str) -> HostRoutes:
        return self.routes.setdefault(host, HostRoutes())


# --- the core ----------------------------------------------------------------------
class Core:
    """Handlers over (event, state, now).  `index` is the read-only desired state."""

    def __init__(self, state: CoreState, index: DesiredIndex) -> None:
        self.state = state
        self.index = index

    # switch lifecycle ------------------------------------------------------------
    def switch_connected(self, dpid: int, now: float) -> Effects:
        fx = Effects()
        host = self.index.host_by_dpid(dpid)
        if host is None:
            return fx  # an unknown bridge gets nothing: secure mode drops its traffic
        self.state.switches[dpid] = Switch(dpid=dpid, host=host.name)
        # Base flows are added, never flushed: after a controller restart the
        # switch still forwards live connections with what it has.
        fx.send(dpid, *base_flows())
        fx.send(dpid, RequestPortDesc(), RequestFlowStats(T_ROUTE))
        return fx

    def switch_disconnected(self, dpid: int, now: float) -> Effects:
        fx = Effects()
        sw = self.state.switches.pop(dpid, None)
        if sw is None:
            return fx
        for pair, setup in list(self.state.pending.items()):
            if any(d == dpid for d, _ in setup.flows):
                fx.extend(self._fail_setup(pair))
        return fx

    def ports_described(self, dpid: int, ports: Iterable[PortInfo], now: float) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        sw.ports = {}
        for p in ports:
            self._learn_port(sw, p)
        return Effects()

    def port_added(self, dpid: int, port: PortInfo, now: float) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is not None:
            self._learn_port(sw, port)
        return Effects()

    def port_removed(self, dpid: int, port: PortInfo, now: float) -> Effects:
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        sw.ports.pop(port.name, None)
        # Flows of a vanished port can never match again; forget them now so the
        # routes they needed are retracted without waiting for the idle timeout.
        gone = [k for k, r in sw.flows.items() if k[0] == port.port_no or _out(r) == port.port_no]
        for key in gone:
            fx.send(dpid, _delete_strict(sw.flows.pop(key).flow))
        fx.extend(self._sync_routes(sw.host, now))
        return fx

    def _learn_port(self, sw: Switch, port: PortInfo) -> None:
        if port.port_no == OFPP_LOCAL:
            sw.local_mac = port.hw_addr
        sw.ports[port.name] = port

    def flows_dumped(self, dpid: int, flows: Iterable[DumpedFlow], now: float) -> Effects:
        """Reconcile our flow cache with the switch's table 1 (level-triggered).

        Called once after connecting (rebuilds state after a controller restart)
        and periodically (catches lost FlowRemoved notices, updates idle times).
        """
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        seen: set[FlowKey] = set()
        for f in flows:
            if f.priority != PRIO_CONNECTION or cookie_kind(f.cookie) != KIND_CONNECTION:
                continue
            key = (f.in_port, f.ip_src, f.ip_dst)
            seen.add(key)
            rec = sw.flows.get(key)
            if rec is None:
                rec = self._adopt(sw, f, now)
                if rec is None:
                    # A flow for endpoints we no longer know: remove it.
                    fx.send(dpid, FlowDelete(T_ROUTE, _conn_match(*key), True, PRIO_CONNECTION))
                    continue
                sw.flows[key] = rec
            if f.packet_count != rec.packet_count:
                rec.packet_count = f.packet_count
                rec.last_active = now
        for key, rec in list(sw.flows.items()):
            if key not in seen and not rec.pending and now - rec.installed_at > DUMP_GRACE:
                del sw.flows[key]
        fx.extend(self._sync_routes(sw.host, now))
        if not sw.synced:
            sw.synced = True
            fx.synced_hosts.append(sw.host)
        return fx

    def _adopt(self, sw: Switch, f: DumpedFlow, now: float) -> FlowRecord | None:
        src = self.index.endpoint_by_ip(f.ip_src)
        dst = self.index.endpoint_by_ip(f.ip_dst)
        if src is None or dst is None or f.out_port is None:
            return None
        needs = self._route_need(sw.host, f.out_port, dst)
        flow = FlowAdd(
            T_ROUTE,
            PRIO_CONNECTION,
            _conn_match(f.in_port, f.ip_src, f.ip_dst),
            (Output(f.out_port),),
            cookie=f.cookie,
        )
        self.state.serial = max(self.state.serial, f.cookie & ((1 << 56) - 1))
        return FlowRecord(
            flow, now - f.duration, needs, packet_count=f.packet_count, last_active=now
        )

    def _route_need(self, host: str, out_port: int, dst: Endpoint) -> tuple[IPv4, IPv4] | None:
        if out_port != OFPP_LOCAL or dst.host == host:
            return None
        dst_host = self.index.host(dst.host)
        return (dst.ip, dst_host.address) if dst_host else None

    def flow_removed(
        self, dpid: int, flow_cookie: int, in_port: int, ip_src: IPv4, ip_dst: IPv4, now: float
    ) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        key = (in_port, ip_src, ip_dst)
        rec = sw.flows.get(key)
        if rec is None or rec.flow.cookie != flow_cookie:
            return Effects()  # stale notice of an older incarnation
        del sw.flows[key]
        return self._sync_routes(sw.host, now)

    # packets -----------------------------------------------------------------------
    def packet_in(self, dpid: int, pkt: PacketInfo, now: float) -> Effects:
        self.state.counters.packet_ins += 1
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        dst = self.index.endpoint_by_ip(pkt.ip_dst)
        if pkt.in_port == OFPP_LOCAL:
            return self._from_kernel(sw, pkt, dst, now)
        name = sw.port_name(pkt.in_port)
        src = self.index.endpoint_by_port(sw.host, name) if name else None
        if src is None:
            return Effects()  # a port that is not (or no longer) an endpoint
        if pkt.ip_src != src.ip or pkt.eth_src != src.mac:
            return self._deny(sw, pkt)  # spoofed source
        if dst is None or dst.ip == src.ip:
            return self._deny(sw, pkt)
        if decide(src, dst, self.index) is not Verdict.ALLOW:
            return self._deny(sw, pkt)
        return self._setup(sw, src, dst, pkt, now)

    def _from_kernel(
        self, sw: Switch, pkt: PacketInfo, dst: Endpoint | None, now: float
    ) -> Effects:
        """A packet the host kernel routed into the bridge with no flow for it."""
        if dst is None or dst.host != sw.host:
            return self._deny(sw, pkt)
        src = self.index.endpoint_by_ip(pkt.ip_src)
        if src is not None:
            if decide(src, dst, self.index) is not Verdict.ALLOW:
                return self._deny(sw, pkt)
            return self._setup(sw, src, dst, pkt, now)
        if pkt.ip_proto == IP_PROTO_ICMP and self.index.host_by_address(pkt.ip_src):
            # ICMP errors of hosts on the path (traceroute's "time exceeded").
            fx = Effects()
            port = sw.port_no(dst.port)
            if port is not None:
                fx.send(sw.dpid, PacketOut(pkt.in_port, _deliver(dst, port), pkt.data))
            return fx
        return self._deny(sw, pkt)

    def _deny(self, sw: Switch, pkt: PacketInfo) -> Effects:
        self.state.counters.denials += 1
        flow = FlowAdd(
            T_ROUTE,
            PRIO_DENY,
            _conn_match(pkt.in_port, pkt.ip_src, pkt.ip_dst),
            (),
            cookie=self.state.next_cookie(KIND_DENY),
            hard_timeout=self.state.deny_hold,
        )
        fx = Effects()
        fx.send(sw.dpid, flow)
        return fx

    def _setup(
        self, sw: Switch, src: Endpoint, dst: Endpoint, pkt: PacketInfo, now: float
    ) -> Effects:
        fx = Effects()
        pair = frozenset((src.ip, dst.ip))
        waiting = self.state.pending.get(pair)
        out = self._first_packet_out(sw, src, dst, pkt)
        if waiting is not None:
            if out is not None and len(waiting.packets) < PENDING_PACKETS:
                waiting.packets.append(out)
            return fx
        plan = self._plan(src, dst)
        if plan is None or out is None:
            self.state.counters.failed_setups += 1
            return fx
        tokens: set[int] = set()
        keys: list[tuple[int, FlowKey]] = []
        for swx, rec in plan:
            key = _key(rec.flow)
            rec.installed_at = now
            rec.last_active = now
            rec.pending = True
            swx.flows[key] = rec
            keys.append((swx.dpid, key))
        for host in {swx.host for swx, _ in plan}:
            fx.extend(self._sync_routes(host, now))
            routes = self.state.host_routes(host)
            tokens |= {
                routes.unacked[r.needs_route[0]]
                for swx, r in plan
                if swx.host == host and r.needs_route and r.needs_route[0] in routes.unacked
            }
        setup = PendingSetup(pair, tokens, keys, [out], now)
        if tokens:
            self.state.pending[pair] = setup
            return fx
        fx.extend(self._install(setup, now))
        return fx

    def _first_packet_out(
        self, sw: Switch, src: Endpoint, dst: Endpoint, pkt: PacketInfo
    ) -> tuple[int, OFMessage] | None:
        """Send the packet that caused the setup on along its path."""
        if dst.host == sw.host:
            port = sw.port_no(dst.port)
            if port is None:
                return None
            return sw.dpid, PacketOut(pkt.in_port, _deliver(dst, port), pkt.data)
        if sw.local_mac is None:
            return None
        return sw.dpid, PacketOut(pkt.in_port, _to_kernel(sw.local_mac), pkt.data)

    def _plan(self, a: Endpoint, b: Endpoint) -> list[tuple[Switch, FlowRecord]] | None:
        """The flows a connection between a and b needs on the switches involved."""
        swa = self.state.switch_of(a.host)
        swb = self.state.switch_of(b.host)
        if swa is None or swb is None:
            return None
        pa, pb = swa.port_no(a.port), swb.port_no(b.port)
        if pa is None or pb is None:
            return None
        plan: list[tuple[Switch, FlowRecord]] = []
        if swa is swb:
            plan.append((swa, self._record(pa, a, b, _deliver(b, pb), None)))
            plan.append((swa, self._record(pb, b, a, _deliver(a, pa), None)))
            return plan
        if swa.local_mac is None or swb.local_mac is None:
            return None
        ha, hb = self.index.host(a.host), self.index.host(b.host)
        if ha is None or hb is None:
            return None
        plan.append((swa, self._record(pa, a, b, _to_kernel(swa.local_mac), (b.ip, hb.address))))
        plan.append((swa, self._record(OFPP_LOCAL, b, a, _deliver(a, pa), None)))
        plan.append((swb, self._record(pb, b, a, _to_kernel(swb.local_mac), (a.ip, ha.address))))
        plan.append((swb, self._record(OFPP_LOCAL, a, b, _deliver(b, pb), None)))
        return plan

    def _record(
        self,
        in_port: int,
        src: Endpoint,
        dst: Endpoint,
        actions: tuple[SetField | Output, ...],
        needs_route: tuple[IPv4, IPv4] | None,
    ) -> FlowRecord:
        flow = FlowAdd(
            T_ROUTE,
            PRIO_CONNECTION,
            _conn_match(in_port, src.ip, dst.ip),
            actions,
            cookie=self.state.next_cookie(KIND_CONNECTION),
            idle_timeout=self.state.idle_timeout,
            flags=OFPFF_SEND_FLOW_REM,
        )
        return FlowRecord(flow, 0.0, needs_route)

    def _install(self, setup: PendingSetup, now: float) -> Effects:
        """Install a setup's flows and send its held packets, reply path first.

        The packet is sent as soon as every flow it and its reply will meet on the
        way is queued: the other switch's flows and the source switch's flows from
        LOCAL.  The source's own outgoing flow follows the packet; if a packet
        overtakes a flow anyway it only comes back as a PacketIn and is resent.
        """
        fx = Effects()
        first: list[tuple[int, OFMessage]] = []
        last: list[tuple[int, OFMessage]] = []
        out_dpids = {dpid for dpid, _ in setup.packets}
        for dpid, key in setup.flows:
            sw = self.state.switches.get(dpid)
            rec = sw.flows.get(key) if sw else None
            if rec is None:
                continue
            rec.pending = False
            on_path = dpid not in out_dpids or key[0] == OFPP_LOCAL
            (first if on_path else last).append((dpid, rec.flow))
        fx.messages.extend(first)
        fx.messages.extend(setup.packets)
        fx.messages.extend(last)
        self.state.counters.setups += 1
        self.state.counters.setup_latency.append(now - setup.started)
        del self.state.counters.setup_latency[:-1000]
        return fx

    def _fail_setup(self, pair: frozenset[IPv4]) -> Effects:
        fx = Effects()
        setup = self.state.pending.pop(pair, None)
        if setup is None:
            return fx
        self.state.counters.failed_setups += 1
        hosts: set[str] = set()
        for dpid, key in setup.flows:
            sw = self.state.switches.get(dpid)
            if sw is not None and key in sw.flows and sw.flows[key].pending:
                del sw.flows[key]
                hosts.add(sw.host)
        for host in hosts:
            fx.extend(self._sync_routes(host, setup.started))
        return fx

    # agents ------------------------------------------------------------------------
    def routes_acked(self, host: str, token: int, now: float) -> Effects:
        fx = Effects()
        routes = self.state.host_routes(host)
        for dst, t in list(routes.unacked.items()):
            if t == token:
                del routes.unacked[dst]
        for pair, setup in list(self.state.pending.items()):
            setup.waiting.discard(token)
            if not setup.waiting:
                del self.state.pending[pair]
                fx.extend(self._install(setup, now))
        return fx

    def routes_failed(self, host: str, token: int, now: float) -> Effects:
        fx = Effects()
        routes = self.state.host_routes(host)
        for dst, t in list(routes.unacked.items()):
            if t == token:
                del routes.unacked[dst]
                routes.announced.pop(dst, None)
        for pair, setup in list(self.state.pending.items()):
            if token in setup.waiting:
                fx.extend(self._fail_setup(pair))
        return fx

    def snapshot(self, host: str) -> tuple[int, list[KernelRoute]]:
        """Everything `host` must hold, for a (re)connecting agent; ack with the token."""
        token = self.state.next_token()
        routes = self.state.host_routes(host)
        routes.announced = self._needed(host)
        routes.unacked = dict.fromkeys(routes.announced, token)
        wanted = [_local_route(e) for e in self.index.endpoints(host=host)]
        wanted += [_via_route(d, v) for d, v in sorted(routes.announced.items())]
        return token, wanted

    def is_synced(self, host: str) -> bool:
        sw = self.state.switch_of(host)
        return sw is not None and sw.synced

    def _needed(self, host: str) -> dict[IPv4, IPv4]:
        sw = self.state.switch_of(host)
        if sw is None:
            return dict(self.state.host_routes(host).announced)  # keep until we know better
        return {r.needs_route[0]: r.needs_route[1] for r in sw.flows.values() if r.needs_route}

    def _sync_routes(self, host: str, now: float) -> Effects:
        """Announce to `host` the via routes its flows need and retract the rest."""
        fx = Effects()
        routes = self.state.host_routes(host)
        needed = self._needed(host)
        remove = [
            _via_route(d, v) for d, v in routes.announced.items() if needed.get(d) != v
        ]
        add = {d: v for d, v in needed.items() if routes.announced.get(d) != v}
        for r in remove:
            routes.announced.pop(r.dst, None)
            routes.unacked.pop(r.dst, None)
        token = self.state.next_token() if add else None
        if token is not None:
            for d, v in add.items():
                routes.announced[d] = v
                routes.unacked[d] = token
        if add or remove:
            fx.deltas.append(
                KernelRouteDelta(
                    host,
                    token,
                    tuple(_via_route(d, v) for d, v in sorted(add.items())),
                    tuple(sorted(remove, key=lambda r: r.dst)),
                )
            )
        return fx

    # desired-state changes ----------------------------------------------------------
    def endpoint_added(self, ep: Endpoint, now: float) -> Effects:
        fx = Effects()
        fx.deltas.append(KernelRouteDelta(ep.host, None, add=(_local_route(ep),)))
        return fx

    def endpoint_removed(self, ep: Endpoint, now: float) -> Effects:
        """Tear down every connection of a removed (or moved) endpoint at once."""
        fx = Effects()
        for pair in [p for p in self.state.pending if ep.ip in p]:
            fx.extend(self._fail_setup(pair))
        for sw in self.state.switches.values():
            gone = [k for k in sw.flows if ep.ip in (k[1], k[2])]
            for key in gone:
                fx.send(sw.dpid, _delete_strict(sw.flows.pop(key).flow))
            if gone:
                fx.extend(self._sync_routes(sw.host, now))
        fx.deltas.append(KernelRouteDelta(ep.host, None, remove=(_local_route(ep),)))
        return fx

    # periodic -------------------------------------------------------------------------
    def tick(self, now: float) -> Effects:
        fx = Effects()
        for pair, setup in list(self.state.pending.items()):
            if now - setup.started > SETUP_TIMEOUT:
                fx.extend(self._fail_setup(pair))
        for sw in self.state.switches.values():
            fx.send(sw.dpid, RequestFlowStats(T_ROUTE))
        return fx

    # views ----------------------------------------------------------------------------
    def live_routes(self, now: float, host: str | None = None) -> list[dict[str, object]]:
        """Connections with at least one installed flow, as GET /routes shows them."""
        seen: dict[frozenset[IPv4], dict[str, object]] = {}
        for sw in self.state.switches.values():
            for (_, s, d), rec in sw.flows.items():
                if rec.pending:
                    continue
                pair = frozenset((s, d))
                row = seen.get(pair)
                if row is None:
                    a, b = sorted(pair)
                    ea, eb = self.index.endpoint_by_ip(a), self.index.endpoint_by_ip(b)
                    if ea is None or eb is None:
                        continue
                    row = {
                        "src": ea.name,
                        "src_ip": str(a),
                        "dst": eb.name,
                        "dst_ip": str(b),
                        "src_host": ea.host,
                        "dst_host": eb.host,
                        "path": "local" if ea.host == eb.host else "underlay",
                        "created": rec.installed_at,
                        "active": rec.last_active,
                        "flows": 0,
                    }
                    seen[pair] = row
                row["flows"] = int(str(row["flows"])) + 1
                row["created"] = min(float(str(row["created"])), rec.installed_at)
                row["active"] = max(float(str(row["active"])), rec.last_active)
        out = []
        for row in seen.values():
            if host is not None and host not in (row["src_host"], row["dst_host"]):
                continue
            created, active = float(str(row.pop("created"))), float(str(row.pop("active")))
            row["age"] = round(max(0.0, now - created), 3)
            row["idle"] = round(max(0.0, now - active), 3)
            out.append(row)
        return sorted(out, key=lambda r: (str(r["src"]), str(r["dst"])))


# --- helpers ---------------------------------------------------------------------------
def _conn_match(in_port: int, src: IPv4, dst: IPv4) -> Match:
    return match(in_port=in_port, eth_type=ETH_TYPE_IP, ipv4_src=str(src), ipv4_dst=str(dst))


def _key(flow: FlowAdd) -> FlowKey:
    m = flow.match_dict()
    return (int(m["in_port"]), IPv4(str(m["ipv4_src"])), IPv4(str(m["ipv4_dst"])))


def _out(rec: FlowRecord) -> int | None:
    for a in rec.flow.actions:
        if isinstance(a, Output):
            return a.port
    return None


def _deliver(dst: Endpoint, port: int) -> tuple[SetField | Output, ...]:
    return (SetField("eth_src", GATEWAY_MAC), SetField("eth_dst", dst.mac), Output(port))


def _to_kernel(local_mac: str) -> tuple[SetField | Output, ...]:
    return (SetField("eth_dst", local_mac), Output(OFPP_LOCAL))


def _delete_strict(flow: FlowAdd) -> FlowDelete:
    return FlowDelete(flow.table, flow.match, strict=True, priority=flow.priority)


def _local_route(ep: Endpoint) -> KernelRoute:
    return KernelRoute(kind="local", dst=ep.ip, lladdr=ep.mac)


def _via_route(dst: IPv4, via: IPv4) -> KernelRoute:
    return KernelRoute(kind="via", dst=dst, via=via)
