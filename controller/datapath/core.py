"""The pure core of the controller: events in, OpenFlow messages and route requests out.

Nothing here sends anything or reads the clock: every handler takes `now` and
returns an `Effects` value the shim carries out.  The per-connection state it
keeps (flows per switch, routes announced to agents) is a cache of what the
switches hold and is rebuilt from their flow dumps after a restart.

Kernel routes are derived, never stored separately: a host must hold
`B/32 via host(B)` exactly while one of its flows (live or waiting to be
installed) sends B's traffic to the LOCAL port.

Policy (docs/architecture.md, "Policy enforcement"): a pair whose both directions
are allowed for every protocol and port gets today's cheap pair flows in table 1;
any other pair is *stateful*: its flows live in table 2, after conntrack, and only
a granted (protocol, port) may commit a connection; replies pass as established.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

from controller.datapath import sites
from controller.datapath.messages import (
    CT,
    CT_INV,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    ETH_TYPE_IP,
    OFPFF_SEND_FLOW_REM,
    OFPM_ALL,
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
    RequestFlowStats,
    RequestPortDesc,
    SetField,
    match,
)
from controller.datapath.needs import Export, ImportDone, ImportTable, Needs, NeedsExport, adds
from controller.datapath.state import (
    CoreState,
    Counters,
    DumpedFlow,
    Effects,
    FlowKey,
    FlowRecord,
    Grant,
    KernelRouteDelta,
    Leg,
    PacketInfo,
    Pair,
    PairState,
    PendingSetup,
    PortInfo,
    Switch,
)
from controller.datapath.tables import (
    COOKIE_KIND_MASK,
    COOKIE_KIND_SHIFT,
    CT_ZONE,
    KIND_CONNECTION,
    KIND_DENY,
    KIND_GUARD,
    PRIO_CONNECTION,
    PRIO_ESTABLISHED,
    PRIO_GRANT,
    PRIO_SPOOF,
    PRIO_STATEFUL_DENY,
    T_ALL,
    T_CLASSIFY,
    T_ROUTE,
    T_STATEFUL,
    base_flows,
    cookie_kind,
    guard_flows,
    packet_in_meter,
)
from controller.desired.index import DesiredIndex
from controller.desired.models import GATEWAY_MAC, Endpoint, Host, KernelRoute, NatRule
from controller.desired.policy import (
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    Decision,
    Verdict,
    decide,
    decide_egress,
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
        if host.name in self.state.foreign:
            return fx  # another replica masters it
        self.state.switches[dpid] = Switch(dpid=dpid, host=host.name)
        self.state.denied = {k: t for k, t in self.state.denied.items() if k[0] != dpid}
        # Base flows are added, never flushed: after a controller restart the
        # switch still forwards live connections with what it has.
        # Meters are re-made with the ports' fixed flows (port description below);
        # the metered flows leave with them, the unmetered miss serves meanwhile.
        fx.send(dpid, MeterDelete(OFPM_ALL))
        fx.send(dpid, *base_flows())
        fx.send(dpid, RequestPortDesc(), RequestFlowStats(T_ALL))
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
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        sw.ports = {}
        for p in ports:
            fx.extend(self._learn_port(sw, p))
        return fx

    def port_added(self, dpid: int, port: PortInfo, now: float) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        return self._learn_port(sw, port)

    def port_removed(self, dpid: int, port: PortInfo, now: float) -> Effects:
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        sw.ports.pop(port.name, None)
        fx.send(dpid, *_delete_guard(port.port_no))
        # Flows of a vanished port can never match again; forget them now so the
        # routes they needed are retracted without waiting for the idle timeout.
        gone = [
            k for k, r in sw.flows.items() if r.in_port == port.port_no or _out(r) == port.port_no
        ]
        for key in gone:
            fx.send(dpid, _delete_strict(sw.pop(key).flow))
        fx.extend(self._sync_routes(sw.host, now))
        return fx

    def _learn_port(self, sw: Switch, port: PortInfo) -> Effects:
        fx = Effects()
        if port.port_no == OFPP_LOCAL:
            sw.local_mac = port.hw_addr
        sw.ports[port.name] = port
        ep = self.index.endpoint_by_port(sw.host, port.name)
        if ep is not None and port.port_no != OFPP_LOCAL:
            fx.send(sw.dpid, *self._guard(ep, port.port_no))
        return fx

    def _guard(self, ep: Endpoint, port_no: int) -> list[OFMessage]:
        """A port's meter, then the fixed flows that use it."""
        st = self.state
        meter: list[OFMessage] = [
            MeterDelete(port_no),  # makes the ADD below idempotent
            packet_in_meter(port_no, st.packet_in_rate, st.packet_in_burst),
        ]
        return meter + list(guard_flows(port_no, ep.mac, str(ep.ip), st.next_token()))

    def flows_dumped(self, dpid: int, flows: Iterable[DumpedFlow], now: float) -> Effects:
        """Reconcile our flow cache with the switch's tables (level-triggered).

        Called once after connecting (rebuilds state after a controller restart)
        and periodically (catches lost FlowRemoved notices, updates idle times,
        reads the packet counts of the deny and anti-spoofing flows).
        """
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        seen: set[FlowKey] = set()
        denied = spoofed = 0
        for f in flows:
            kind = cookie_kind(f.cookie)
            if kind == KIND_DENY:
                denied += f.packet_count
                continue
            if kind == KIND_GUARD and f.priority == PRIO_SPOOF:
                spoofed += f.packet_count
                continue
            if kind != KIND_CONNECTION or f.table not in (T_ROUTE, T_STATEFUL):
                continue
            key = sw.cookies.get(f.cookie)
            rec = sw.flows.get(key) if key is not None else None
            if rec is None:
                rec = self._adopt(sw, f, now)
                if rec is None:
                    # A flow for endpoints we no longer know: remove it.
                    fx.send(dpid, FlowDelete(f.table, f.match, True, f.priority))
                    continue
                sw.put(rec)
            seen.add(rec.key)
            if f.packet_count != rec.packet_count:
                rec.packet_count = f.packet_count
                rec.last_active = now
        self.state.live_denied[sw.host] = denied
        self.state.live_spoofed[sw.host] = spoofed
        for key, rec in list(sw.flows.items()):
            if key not in seen and not rec.pending and now - rec.installed_at > DUMP_GRACE:
                sw.pop(key)
        self._forget_idle_pairs()
        first = not sw.synced
        sw.synced = True  # before the sync below, so that our exports include it
        fx.extend(self._sync_routes(sw.host, now))
        if first:
            fx.synced_hosts.append(sw.host)
            # Its sets replace its previous master's on every host served elsewhere
            # (empty ones too: that master may have exported needs that are gone).
            for other in sorted(self.state.foreign):
                fx.extend(self._export(other, now))
        return fx

    def _adopt(self, sw: Switch, f: DumpedFlow, now: float) -> FlowRecord | None:
        m = dict(f.match)
        if "ipv4_src" not in m or "ipv4_dst" not in m or "in_port" not in m:
            return None
        ip_src, ip_dst = IPv4(str(m["ipv4_src"])), IPv4(str(m["ipv4_dst"]))
        src = self.index.endpoint_by_ip(ip_src)
        dst = self.index.endpoint_by_ip(ip_dst)
        if (src is None and dst is None) or f.out_port is None:
            return None
        needs = self._route_need(sw.host, f.out_port, dst) if dst is not None else None
        flow = FlowAdd(f.table, f.priority, f.match, (Output(f.out_port),), cookie=f.cookie)
        self.state.serial = max(self.state.serial, f.cookie & ((1 << 56) - 1))
        pair = frozenset((ip_src, ip_dst))
        mode: Literal["open", "stateful"] = "open" if f.table == T_ROUTE else "stateful"
        mark = m.get("ct_mark")
        ps = self.state.pairs.get(pair)
        if ps is None or ps.mode != mode:
            ps = self.state.pairs[pair] = PairState(mode, mark if isinstance(mark, int) else 0)
        if isinstance(mark, int):
            ps.mark = mark
        ct_state = m.get("ct_state")
        if f.priority == PRIO_GRANT and isinstance(ct_state, tuple) and not ct_state[1] & CT_RPL:
            proto = m.get("ip_proto")
            port = m.get("tcp_dst", m.get("udp_dst"))
            ps.grants.add((
                ip_src,
                proto if isinstance(proto, int) else None,
                port if isinstance(port, int) else None,
            ))
        return FlowRecord(
            flow, now - f.duration, needs, packet_count=f.packet_count, last_active=now
        )

    def _route_need(self, host: str, out_port: int, dst: Endpoint) -> tuple[IPv4, IPv4] | None:
        if out_port != OFPP_LOCAL or dst.host == host:
            return None
        dst_host = self.index.host(dst.host)
        return (dst.ip, self._next_hop(host, dst_host)) if dst_host else None

    # sites (docs/architecture.md, "Sites") -----------------------------------------
    def _next_hop(self, src: str, dst: Host) -> IPv4:
        """Where host `src` routes `dst`'s containers: across sites, its tunnel address."""
        h = self.index.host(src)
        if h is not None and dst.tunnel_address is not None and sites.crosses(h, dst):
            return dst.tunnel_address
        return dst.address

    def _tunnel_host(self, address: IPv4) -> Host | None:
        return self.index.host_by_tunnel(address)

    def _kernel_route(self, dst: IPv4, via: IPv4) -> KernelRoute:
        """A `wg` route when `via` is a tunnel address, else a plain `via` route."""
        if self._tunnel_host(via) is not None:
            return KernelRoute(kind="wg", dst=dst, via=via)
        return _via_route(dst, via)

    def _relay_of(self, src: str, via: IPv4) -> str | None:
        """The relay host between `src` and the host of tunnel address `via`, if any."""
        h = self.index.host(src)
        if h is None or h.wg_endpoint is not None or h.tunnel_address is None:
            return None
        dst = self._tunnel_host(via)
        relay = sites.relay_for(h, dst, self.index.hosts()) if dst is not None else None
        return relay.name if relay is not None else None

    def _relays_of(self, host: str) -> set[str]:
        """Relays that may carry connections of `host` (it is behind NAT)."""
        h = self.index.host(host)
        if h is None or h.wg_endpoint is not None or h.tunnel_address is None:
            return set()
        hosts = self.index.hosts()
        return {
            r.name for x in hosts if (r := sites.relay_for(h, x, hosts)) is not None
        } - {host}

    def _relay_needs(self, host: str, switches: Iterable[Switch]) -> dict[IPv4, IPv4]:
        """The `wg` routes relay `host` holds for the NATed pairs it carries: both
        ends' container addresses, through their hosts' tunnel addresses (for the
        flows of `switches`)."""
        me = self.index.host(host)
        if me is None or not me.relay:
            return {}
        out: dict[IPv4, IPv4] = {}
        for sw in switches:
            src = self.index.host(sw.host)
            if sw.host == host or src is None or src.tunnel_address is None:
                continue
            for r in sw.flows.values():
                if r.needs_route and self._relay_of(sw.host, r.needs_route[1]) == host:
                    out[r.needs_route[0]] = r.needs_route[1]
                    # The sender's end too, through its own tunnel address: WireGuard
                    # on the relay drops what arrives from a peer unless its source is
                    # in that peer's allowed-ips.  The flow the other way, which would
                    # also ask for it, lives on another switch (another replica's, with
                    # spread masters) and may expire first (one-way traffic).
                    out[r.src] = src.tunnel_address
        return out

    def _relay_tokens(self, plan: list[tuple[Switch, FlowRecord]]) -> set[int]:
        """Tokens of relay routes a setup has to wait for."""
        out: set[int] = set()
        for swx, r in plan:
            if r.needs_route is None:
                continue
            relay = self._relay_of(swx.host, r.needs_route[1])
            if relay is not None and relay not in self.state.foreign:
                unacked = self.state.host_routes(relay).unacked
                out |= {t for a in (r.needs_route[0], r.src)
                        if (t := unacked.get(a)) is not None}
        return out

    def _export_tokens(self, plan: list[tuple[Switch, FlowRecord]]) -> set[int]:
        """Exports in flight to the hosts served elsewhere that a setup's first
        packet crosses: its relay, and its receiver across sites."""
        hosts: set[str] = set()
        for swx, r in plan:
            if r.needs_route is None:
                continue
            relay = self._relay_of(swx.host, r.needs_route[1])
            dst = self.index.endpoint_by_ip(r.needs_route[0])
            if dst is not None and self._is_receiver(dst.host, r.needs_route):
                hosts.add(dst.host)
            if relay is not None:
                hosts.add(relay)
        return {
            t for h in hosts & self.state.foreign
            if (t := self.state.exports.get(h, Export()).unacked) is not None
        }

    def _path(self, a: str, b: str) -> str:
        """"underlay" inside a site, "wireguard" across sites, "relay:R" through R."""
        ha, hb = self.index.host(a), self.index.host(b)
        if ha is None or hb is None or not sites.crosses(ha, hb):
            return "underlay"
        relay = sites.relay_for(ha, hb, self.index.hosts())
        return f"relay:{relay.name}" if relay is not None else "wireguard"

    def flow_removed(
        self, dpid: int, flow_cookie: int, packet_count: int, now: float
    ) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        if cookie_kind(flow_cookie) == KIND_DENY:
            self.state.count(sw.host, "denied_packets", packet_count)
            return Effects()
        key = sw.cookies.get(flow_cookie)
        if key is None:
            return Effects()  # stale notice of an older incarnation
        sw.pop(key)
        self._forget_idle_pairs()
        return self._sync_routes(sw.host, now)

    # decisions ---------------------------------------------------------------------
    def verdict(
        self,
        src_ip: IPv4,
        src: Endpoint | None,
        dst_ip: IPv4,
        dst: Endpoint | None,
        proto: int,
        port: int | None,
    ) -> Decision:
        """May src open proto/port to dst?  Either end may be outside daolinet."""
        return decide_connection(self.index, src_ip, src, dst_ip, dst, proto, port)

    def _fully_open(self, a: Endpoint, b: Endpoint) -> bool:
        """a may open anything to b (a verdict that is the same for every port)."""
        d = decide(self.index, a.ip, b, 0, None, a)
        return d.verdict is Verdict.ALLOW and not d.port_specific

    # packets -----------------------------------------------------------------------
    def packet_in(self, dpid: int, pkt: PacketInfo, now: float) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        self.state.count(sw.host, "packet_ins")
        if pkt.table != T_STATEFUL and self._has_stateful(sw, pkt):
            # A packet that met no flow in table 1 although its pair is stateful
            # here (a race with our own flow-mods): let it take the tables again.
            fx = Effects()
            fx.send(sw.dpid, PacketOut(pkt.in_port, (Output(OFPP_TABLE),), pkt.data))
            return fx
        dst = self.index.endpoint_by_ip(pkt.ip_dst)
        if pkt.in_port == OFPP_LOCAL:
            return self._from_kernel(sw, pkt, dst, now)
        name = sw.port_name(pkt.in_port)
        src = self.index.endpoint_by_port(sw.host, name) if name else None
        if src is None:
            return Effects()  # a port that is not (or no longer) an endpoint
        if pkt.ip_src != src.ip or pkt.eth_src != src.mac:
            return self._deny(sw, pkt, now=now)  # spoofed source
        if dst is not None and dst.ip == src.ip:
            return self._deny(sw, pkt, now=now)
        return self._decide_and_setup(sw, src, dst, pkt, now)

    def _has_stateful(self, sw: Switch, pkt: PacketInfo) -> bool:
        ps = self.state.pairs.get(frozenset((pkt.ip_src, pkt.ip_dst)))
        return ps is not None and ps.mode == "stateful" and any(
            r.in_port == pkt.in_port and r.src == pkt.ip_src and r.dst == pkt.ip_dst
            for r in sw.flows.values()
        )

    def _from_kernel(
        self, sw: Switch, pkt: PacketInfo, dst: Endpoint | None, now: float
    ) -> Effects:
        """A packet the host kernel routed into the bridge with no flow for it."""
        if dst is None or dst.host != sw.host:
            return self._deny(sw, pkt, now=now)
        src = self.index.endpoint_by_ip(pkt.ip_src)
        if src is not None:
            return self._decide_and_setup(sw, src, dst, pkt, now)
        if pkt.ip_proto == IP_PROTO_ICMP and self.index.host_by_address(pkt.ip_src):
            # ICMP errors of hosts on the path (traceroute's "time exceeded").
            fx = Effects()
            port = sw.port_no(dst.port)
            if port is not None:
                fx.send(sw.dpid, PacketOut(pkt.in_port, _deliver(dst, port), pkt.data))
            return fx
        # From outside daolinet: a published port (DNAT by the host) or a reply to
        # a container's own connection out (masquerade).
        return self._decide_and_setup(sw, None, dst, pkt, now)

    def _decide_and_setup(
        self,
        sw: Switch,
        src: Endpoint | None,
        dst: Endpoint | None,
        pkt: PacketInfo,
        now: float,
    ) -> Effects:
        reply = (
            pkt.ct_state & CT_TRK
            and pkt.ct_state & CT_RPL
            and not pkt.ct_state & (CT_NEW | CT_INV)
        )
        if reply:
            # The reply direction of a connection conntrack knows but no flow of ours
            # passes (its grant was revoked, or the controller restarted): decide the
            # direction that opened it, whose destination port is our source port.
            d = self.verdict(pkt.ip_dst, dst, pkt.ip_src, src, pkt.ip_proto, pkt.tp_src)
            grant: Grant = (pkt.ip_dst, *_grant_port(d, pkt.ip_proto, pkt.tp_src))
        else:
            d = self.verdict(pkt.ip_src, src, pkt.ip_dst, dst, pkt.ip_proto, pkt.tp_dst)
            grant = (pkt.ip_src, *_grant_port(d, pkt.ip_proto, pkt.tp_dst))
        if d.verdict is not Verdict.ALLOW:
            return self._deny(sw, pkt, d.port_specific, bool(reply), now)
        mode: Literal["open", "stateful"] = "stateful"
        if src is not None and dst is not None and self._fully_open(src, dst) and \
                self._fully_open(dst, src):
            mode = "open"
        return self._setup(sw, src, dst, pkt, mode, grant, now)

    def _deny(
        self,
        sw: Switch,
        pkt: PacketInfo,
        port_specific: bool = False,
        reply: bool = False,
        now: float = 0.0,
    ) -> Effects:
        """Drop what was denied in the switch for a while (table 2, after conntrack).

        Below the established flows, so it never cuts the replies of an allowed
        connection; port-specific when the verdict was.
        """
        self.state.count(sw.host, "denials")
        fields: dict[str, MatchValue] = {
            "in_port": pkt.in_port,
            "eth_type": ETH_TYPE_IP,
            "ipv4_src": str(pkt.ip_src),
            "ipv4_dst": str(pkt.ip_dst),
            "ct_state": (CT_TRK, CT_TRK),
        }
        if port_specific:
            fields["ip_proto"] = pkt.ip_proto
            if reply:
                fields["ct_state"] = (CT_TRK | CT_RPL, CT_TRK | CT_RPL)
                fields.update(_l4(pkt.ip_proto, pkt.tp_src, "src"))
            else:
                fields.update(_l4(pkt.ip_proto, pkt.tp_dst, "dst"))
        fx = Effects()
        m = match(**fields)
        if self.state.denied.get((sw.dpid, m), -1.0) > now:
            return fx
        if len(self.state.denied) > 10000:
            self.state.denied = {k: t for k, t in self.state.denied.items() if t > now}
        self.state.denied[(sw.dpid, m)] = now + self.state.deny_hold - 0.5
        flow = FlowAdd(
            T_STATEFUL,
            PRIO_STATEFUL_DENY,
            m,
            (),
            cookie=self.state.next_cookie(KIND_DENY),
            idle_timeout=self.state.deny_hold,
            flags=OFPFF_SEND_FLOW_REM,
        )
        fx.send(sw.dpid, flow)
        return fx

    def _setup(
        self,
        sw: Switch,
        src: Endpoint | None,
        dst: Endpoint | None,
        pkt: PacketInfo,
        mode: Literal["open", "stateful"],
        grant: Grant,
        now: float,
    ) -> Effects:
        fx = Effects()
        pair = frozenset((pkt.ip_src, pkt.ip_dst))
        legs = self._legs(pkt.ip_src, src, pkt.ip_dst, dst)
        ps = self.state.pairs.get(pair)
        live = ps is not None and self._pair_has_flows(pair)
        if ps is not None and live and ps.mode != mode:
            fx.extend(self._teardown(pair, now))  # the pair changes its way of forwarding
            live = False
        if ps is None or not live:
            ps = self.state.pairs[pair] = PairState(mode, self.state.next_mark())
        waiting = self.state.pending.get(pair)
        out = self._first_packet_out(sw, mode, src, dst, pkt)
        if waiting is not None:
            if out is not None and len(waiting.packets) < PENDING_PACKETS:
                waiting.packets.append(out)
            return fx
        if legs is None or out is None:
            self.state.count(sw.host, "failed_setups")
            return fx
        ps.grants.add(grant)
        plan = self._records(legs, ps, grant)
        tokens: set[int] = set()
        keys: list[tuple[int, FlowKey]] = []
        for swx, rec in plan:
            rec.installed_at = now
            rec.last_active = now
            rec.pending = True
            swx.put(rec)
            keys.append((swx.dpid, rec.key))
        for host in {swx.host for swx, _ in plan}:
            fx.extend(self._sync_routes(host, now))
            routes = self.state.host_routes(host)
            tokens |= {
                routes.unacked[r.needs_route[0]]
                for swx, r in plan
                if swx.host == host and r.needs_route and r.needs_route[0] in routes.unacked
            }
        tokens |= self._relay_tokens(plan)
        tokens |= self._export_tokens(plan)
        setup = PendingSetup(pair, tokens, keys, [out], now, resubmit=mode == "stateful")
        setup_host = sw.host
        if tokens:
            self.state.pending[pair] = setup
            return fx
        fx.extend(self._install(setup, now, setup_host))
        return fx

    def _first_packet_out(
        self,
        sw: Switch,
        mode: str,
        src: Endpoint | None,
        dst: Endpoint | None,
        pkt: PacketInfo,
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
            return sw.dpid, PacketOut(pkt.in_port, _deliver(dst, port), pkt.data)
        if sw.local_mac is None:
            return None
        return sw.dpid, PacketOut(pkt.in_port, _to_kernel(sw.local_mac), pkt.data)

    def _legs(
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
                Leg(swe, ep.ip, ext, pe, _to_kernel(swe.local_mac), None),
                Leg(swe, ext, ep.ip, OFPP_LOCAL, _deliver(ep, pe), None),
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
                Leg(swa, a.ip, b.ip, pa, _deliver(b, pb), None),
                Leg(swa, b.ip, a.ip, pb, _deliver(a, pa), None),
            ]
        if swa.local_mac is None or swb.local_mac is None:
            return None
        ha, hb = self.index.host(a.host), self.index.host(b.host)
        if ha is None or hb is None:
            return None
        return [
            Leg(swa, a.ip, b.ip, pa, _to_kernel(swa.local_mac),
                (b.ip, self._next_hop(a.host, hb))),
            Leg(swa, b.ip, a.ip, OFPP_LOCAL, _deliver(a, pa), None),
            Leg(swb, b.ip, a.ip, pb, _to_kernel(swb.local_mac),
                (a.ip, self._next_hop(b.host, ha))),
            Leg(swb, a.ip, b.ip, OFPP_LOCAL, _deliver(b, pb), None),
        ]

    def _half_legs(self, sw: Switch, mine: Endpoint, other: Endpoint) -> list[Leg] | None:
        """Our switch's two legs of a connection whose other end another replica
        serves: that replica installs its switch's legs when the first packet
        reaches it from its host's kernel (`_from_kernel`), as after a restart."""
        port = sw.port_no(mine.port)
        hb = self.index.host(other.host)
        if port is None or sw.local_mac is None or hb is None:
            return None
        return [
            Leg(sw, mine.ip, other.ip, port, _to_kernel(sw.local_mac),
                (other.ip, self._next_hop(mine.host, hb))),
            Leg(sw, other.ip, mine.ip, OFPP_LOCAL, _deliver(mine, port), None),
        ]

    def _records(
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
                    allow.update(_l4(proto, port, "dst"))
                out.append((leg.sw, self._record(T_STATEFUL, PRIO_GRANT, allow, commit,
                                                 leg.needs_route)))
            else:  # replies of a granted connection conntrack knows under another mark
                adopt = dict(base, ct_state=(CT_TRK | CT_RPL, CT_TRK | CT_RPL))
                if proto is not None:
                    adopt["ip_proto"] = proto
                    adopt.update(_l4(proto, port, "src"))
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

    def _install(self, setup: PendingSetup, now: float, host: str | None = None) -> Effects:
        """Install a setup's flows and send its held packets, reply path first.

        The packet is sent as soon as every flow it and its reply will meet on the
        way is queued: the other switch's flows and the source switch's flows from
        LOCAL.  The source's own outgoing flow follows the packet; if a packet
        overtakes a flow anyway it only comes back as a PacketIn and is resent.
        A stateful setup's packets take the tables, so they follow every flow.
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
            on_path = setup.resubmit or dpid not in out_dpids or rec.in_port == OFPP_LOCAL
            (first if on_path else last).append((dpid, rec.flow))
        fx.messages.extend(first)
        fx.messages.extend(setup.packets)
        fx.messages.extend(last)
        if host is None:
            sw0 = self.state.switches.get(setup.packets[0][0]) if setup.packets else None
            host = sw0.host if sw0 else ""
        self.state.count(host, "setups")
        for c in (self.state.counters, self.state.host_counters.setdefault(host, Counters())):
            c.setup_latency.append(now - setup.started)
            del c.setup_latency[:-1000]
        return fx

    def _fail_setup(self, pair: Pair) -> Effects:
        fx = Effects()
        setup = self.state.pending.pop(pair, None)
        if setup is None:
            return fx
        hosts: set[str] = set()
        for dpid, key in setup.flows:
            sw = self.state.switches.get(dpid)
            if sw is not None and key in sw.flows and sw.flows[key].pending:
                sw.pop(key)
                hosts.add(sw.host)
        first = self.state.switches.get(setup.packets[0][0]) if setup.packets else None
        self.state.count(first.host if first else "", "failed_setups")
        for host in hosts:
            fx.extend(self._sync_routes(host, setup.started))
        return fx

    def _pair_has_flows(self, pair: Pair) -> bool:
        return any(r.pair == pair for sw in self.state.switches.values()
                   for r in sw.flows.values())

    def _forget_idle_pairs(self) -> None:
        live = {r.pair for sw in self.state.switches.values() for r in sw.flows.values()}
        for pair in [p for p in self.state.pairs if p not in live and p not in self.state.pending]:
            del self.state.pairs[pair]

    def _teardown(self, pair: Pair, now: float) -> Effects:
        """Delete every flow of a pair on every switch (and the routes they needed)."""
        fx = Effects()
        if pair in self.state.pending:
            fx.extend(self._fail_setup(pair))
        for sw in self.state.switches.values():
            gone = [k for k, r in sw.flows.items() if r.pair == pair]
            for key in gone:
                fx.send(sw.dpid, _delete_strict(sw.pop(key).flow))
            if gone:
                fx.extend(self._sync_routes(sw.host, now))
        self.state.pairs.pop(pair, None)
        return fx

    # agents ------------------------------------------------------------------------
    def routes_acked(self, host: str, token: int, now: float) -> Effects:
        self._settle(host, token, applied=True)
        return self._answered(token, True, now)

    def routes_failed(self, host: str, token: int, now: float) -> Effects:
        self._settle(host, token, applied=False)
        return self._answered(token, False, now)

    def _answered(self, token: int, ok: bool, now: float) -> Effects:
        """Setups and imports waiting for `token` go on (or fail)."""
        fx = Effects()
        for pair, setup in list(self.state.pending.items()):
            if token not in setup.waiting:
                continue
            if not ok:
                fx.extend(self._fail_setup(pair))
                continue
            setup.waiting.discard(token)
            if not setup.waiting:
                del self.state.pending[pair]
                fx.extend(self._install(setup, now))
        for ref, waits in list(self.state.import_waits.items()):
            if token in waits:
                waits.discard(token)
                if not ok or not waits:
                    del self.state.import_waits[ref]
                    fx.imports_done.append(ImportDone(ref, ok))
        return fx

    # other replicas (controller/datapath/needs.py) ------------------------------------
    def set_foreign(self, hosts: Iterable[str], generation: int, now: float) -> Effects:
        """The hosts whose switch another replica masters now, and the generation
        of our own mastership.  A switch handed to another replica is forgotten
        (its flows stay in it; its new master adopts them); what it needed on our
        hosts is kept as an import of our old generation until its new master's
        export replaces it.  Everything is exported again: owners may have changed.
        """
        fx = Effects()
        new = set(hosts)
        for host in sorted(new - self.state.foreign):
            sw = self.state.switch_of(host)
            if sw is not None:
                fx.extend(self._hand_over(sw))
            self.state.routes.pop(host, None)
            self.state.imports.pop(host, None)
        for host in self.state.foreign - new:
            self.state.exports.pop(host, None)
        self.state.foreign = new
        self.state.generation = generation
        for ex in self.state.exports.values():
            ex.sent = None
        for host in sorted(new):
            fx.extend(self._export(host, now))
        return fx

    def _hand_over(self, sw: Switch) -> Effects:
        fx = Effects()
        mine = [x.host for x in self.state.switches.values() if x is not sw]
        for host in mine:
            kept = self._relay_needs(host, [sw]) | self._receive_needs(host, [sw])
            self.state.imports.setdefault(host, ImportTable()).merge(
                self.state.generation, self.state.next_token(), {sw.dpid: kept}
            )
        for pair, setup in list(self.state.pending.items()):
            if any(d == sw.dpid for d, _ in setup.flows):
                fx.extend(self._fail_setup(pair))
        del self.state.switches[sw.dpid]
        self._forget_idle_pairs()
        return fx

    def needs_imported(
        self,
        host: str,
        generation: int,
        token: int,
        needs: dict[int, Needs],
        ref: int,
        now: float,
    ) -> Effects:
        """Another replica's switches' needs on our `host` (a `NeedsExport`); answered
        with `ImportDone(ref)` once the host's agent holds them."""
        fx = Effects()
        if host in self.state.foreign or self.index.host(host) is None:
            fx.imports_done.append(ImportDone(ref, False))
            return fx
        self.state.imports.setdefault(host, ImportTable()).merge(generation, token, needs)
        if not self.is_synced(host):
            # Kept for the host's snapshot, but nothing holds them yet: the exporter
            # fails what waits for them and exports again (`tick`).
            fx.imports_done.append(ImportDone(ref, False))
            return fx
        fx.extend(self._sync_routes(host, now, partners=False))
        wanted = {d for n in needs.values() for d in n}
        waits = {t for d, t in self.state.host_routes(host).unacked.items() if d in wanted}
        if waits:
            self.state.import_waits[ref] = waits
        else:
            fx.imports_done.append(ImportDone(ref, True))
        return fx

    def exports_acked(self, host: str, token: int, ok: bool, now: float) -> Effects:
        """The replica serving `host` answered our export `token`."""
        ex = self.state.exports.get(host)
        if ex is not None:
            if ex.unacked is not None and token >= ex.unacked:
                ex.unacked = None
            if not ok:
                ex.sent = None  # what it holds is unknown: send everything again
        return self._answered(token, ok, now)

    def _export(self, host: str, now: float) -> Effects:
        """Send the replica serving `host` our synced switches' needs there, if they
        changed since the last export."""
        fx = Effects()
        ex = self.state.exports.setdefault(host, Export())
        needs = {
            sw.dpid: self._relay_needs(host, [sw]) | self._receive_needs(host, [sw])
            for sw in self.state.switches.values() if sw.synced
        }
        if needs == (ex.sent or {}):
            return fx  # unchanged (or, with nothing known there, nothing to say)
        token = self.state.next_token()
        grows = adds(ex.sent, needs)
        fx.exports.append(NeedsExport(host, self.state.generation, token, needs, grows))
        ex.sent = needs
        if grows:
            ex.unacked = token
        return fx

    def _imported(self, host: str) -> Needs:
        table = self.state.imports.get(host)
        if table is None:
            return {}
        ours = {d for d, sw in self.state.switches.items() if sw.synced}
        gone = {d for d in table.sets if self.index.host_by_dpid(d) is None}
        table.forget(gone)
        return table.union(ours)

    def _settle(self, host: str, token: int, applied: bool) -> None:
        """The agent answered `token`: its routes are no longer in flight, and if it
        could not apply them, no longer announced either."""
        routes = self.state.host_routes(host)
        for dst, t in list(routes.unacked.items()):
            if t == token:
                del routes.unacked[dst]
                if not applied:
                    routes.announced.pop(dst, None)

    def snapshot(self, host: str) -> tuple[int, list[KernelRoute]]:
        """Everything `host` must hold, for a (re)connecting agent; ack with the token."""
        token = self.state.next_token()
        routes = self.state.host_routes(host)
        # The snapshot replaces every delta still in flight to this host (sent to an
        # agent that went away, or never sent): no answer will name their tokens, so
        # what waits for them (a setup, an import) waits for the snapshot's instead.
        superseded = set(routes.unacked.values())
        if superseded:
            for setup in self.state.pending.values():
                if setup.waiting & superseded:
                    setup.waiting = (setup.waiting - superseded) | {token}
            for ref, waits in self.state.import_waits.items():
                if waits & superseded:
                    self.state.import_waits[ref] = (waits - superseded) | {token}
        routes.announced = self._needed(host)
        routes.unacked = dict.fromkeys(routes.announced, token)
        wanted = [_local_route(e) for e in self.index.endpoints(host=host)]
        wanted += [self._kernel_route(d, v) for d, v in sorted(routes.announced.items())]
        return token, wanted

    def nat_rules(self, host: str) -> list[NatRule]:
        """The host-kernel NAT `host` must hold: its published ports and masquerades."""
        h = self.index.host(host)
        if h is None:
            return []
        rules: list[NatRule] = []
        networks = self.index.networks()
        local = self.index.endpoints(host=host)
        for ep in local:
            for pp in self.index.published_ports(ep.name):
                rules.append(NatRule(
                    kind="dnat", protocol=pp.protocol, address=h.address, port=pp.host_port,
                    to=ep.ip, to_port=pp.container_port,
                ))
        internal = tuple(sorted(n.subnet for n in networks))
        for net in networks:
            if net.external and any(e.network == net.name for e in local):
                rules.append(NatRule(kind="masquerade", source=net.subnet, exclude=internal))
        return rules

    def is_synced(self, host: str) -> bool:
        sw = self.state.switch_of(host)
        return sw is not None and sw.synced

    def _needed(self, host: str) -> dict[IPv4, IPv4]:
        sw = self.state.switch_of(host)
        if sw is None:
            return dict(self.state.host_routes(host).announced)  # keep until we know better
        mine = list(self.state.switches.values())
        return (
            self._imported(host)
            | {r.needs_route[0]: r.needs_route[1] for r in sw.flows.values() if r.needs_route}
            | self._relay_needs(host, mine)
            | self._receive_needs(host, mine)
        )

    def _receive_needs(self, host: str, switches: Iterable[Switch]) -> dict[IPv4, IPv4]:
        """Across sites, what `host` holds while another host still sends to it.

        WireGuard accepts a packet only if its source is in the sending peer's
        allowed-ips. So the receiving host keeps the sender's container address
        (route and allowed-ips) as long as the sender's flow lives, even when its own
        flows of the connection idled out (one-way traffic, a link outage during
        which nothing arrived). Otherwise the sender's retransmissions would be
        dropped by WireGuard and never reach a switch to set the connection up again.
        """
        me = self.index.host(host)
        if me is None or (me.tunnel_address is None and host not in self.state.foreign):
            return {}  # no flow can be its receiver's (_is_receiver): skip the scan
        out: dict[IPv4, IPv4] = {}
        for sender in (sw for sw in switches if sw.host != host):
            src_host = self.index.host(sender.host)
            if src_host is None:
                continue
            hop = self._next_hop(host, src_host)
            for r in sender.flows.values():
                if r.needs_route and self._is_receiver(host, r.needs_route):
                    out[r.src] = hop
        return out

    def _is_receiver(self, host: str, need: tuple[IPv4, IPv4]) -> bool:
        """Whether a flow needing `need` (dst, next hop) sends to `host` across sites,
        or to a host another replica masters.

        Inside a site too, the receiving host's kernel needs a route back to the
        sender for what it answers itself before its switch sees the connection
        (`traceroute`'s probe that expires there).  With one master of both
        switches the flow the other way brings that route at setup; a host another
        replica masters gets it exported, and the setup waits for it as across
        sites (the probe follows the first packet at once).
        """
        dst = self.index.endpoint_by_ip(need[0])
        if dst is None or dst.host != host:
            return False
        return self._tunnel_host(need[1]) is not None or host in self.state.foreign

    def _receivers_of(self, host: str) -> set[str]:
        """Hosts whose receive needs depend on `host`'s flows, now or before."""
        me = self.index.host(host)
        if me is None or (me.tunnel_address is None and not self.state.foreign):
            return set()  # no receive needs anywhere for its flows: skip the scans
        hosts: set[str] = set()
        sw = self.state.switch_of(host)
        for r in sw.flows.values() if sw else ():
            if r.needs_route:
                dst = self.index.endpoint_by_ip(r.needs_route[0])
                if dst is not None and self._is_receiver(dst.host, r.needs_route):
                    hosts.add(dst.host)
        held = [(o, set(r.announced)) for o, r in self.state.routes.items()]
        held += [(o, {d for n in (e.sent or {}).values() for d in n})
                 for o, e in self.state.exports.items()]
        for other, dsts in held:
            if other == host:
                continue
            for d in dsts:
                ep = self.index.endpoint_by_ip(d)
                if ep is not None and ep.host == host:
                    hosts.add(other)
        return hosts - {host}

    def _sync_routes(self, host: str, now: float, partners: bool = True) -> Effects:
        """Announce to `host` the via routes its flows need and retract the rest.

        With `partners`, the hosts whose needs follow `host`'s flows (relays, and
        the receivers of its cross-site connections) are brought along.
        """
        if host in self.state.foreign:
            return self._export(host, now)  # its replica's core decides what it holds
        fx = Effects()
        routes = self.state.host_routes(host)
        needed = self._needed(host)
        remove = [
            self._kernel_route(d, v) for d, v in routes.announced.items() if needed.get(d) != v
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
                    tuple(self._kernel_route(d, v) for d, v in sorted(add.items())),
                    tuple(sorted(remove, key=lambda r: r.dst)),
                )
            )
        if partners:
            for other in self._relays_of(host) | self._receivers_of(host):
                fx.extend(self._sync_routes(other, now, partners=False))
        return fx

    # desired-state changes ----------------------------------------------------------
    def endpoint_added(self, ep: Endpoint, now: float) -> Effects:
        fx = Effects()
        if ep.host in self.state.foreign:
            return fx  # its host's replica announces it there
        fx.deltas.append(KernelRouteDelta(ep.host, None, add=(_local_route(ep),)))
        sw = self.state.switch_of(ep.host)
        port = sw.port_no(ep.port) if sw else None
        if sw is not None and port is not None:
            fx.send(sw.dpid, *self._guard(ep, port))
        fx.nat[ep.host] = self.nat_rules(ep.host)
        return fx

    def endpoint_removed(self, ep: Endpoint, now: float) -> Effects:
        """Tear down every connection of a removed (or moved) endpoint at once."""
        fx = Effects()
        for pair in [p for p in self.state.pending if ep.ip in p]:
            fx.extend(self._fail_setup(pair))
        for pair in [p for p in self.state.pairs if ep.ip in p]:
            fx.extend(self._teardown(pair, now))
        for sw in self.state.switches.values():
            gone = [k for k, r in sw.flows.items() if ep.ip in (r.src, r.dst)]
            for key in gone:
                fx.send(sw.dpid, _delete_strict(sw.pop(key).flow))
            if gone:
                fx.extend(self._sync_routes(sw.host, now))
        home = self.state.switch_of(ep.host)
        port = home.port_no(ep.port) if home else None
        if home is not None and port is not None:
            fx.send(home.dpid, *_delete_guard(port))
        if ep.host in self.state.foreign:
            return fx
        fx.deltas.append(KernelRouteDelta(ep.host, None, remove=(_local_route(ep),)))
        fx.nat[ep.host] = self.nat_rules(ep.host)
        return fx

    def policy_changed(self, now: float) -> Effects:
        """Desired policy changed: revoke what is no longer allowed, at once.

        Every live pair is decided again; a pair whose forwarding or one of whose
        grants the policy no longer allows loses all its flows on every switch (and
        so its routes).  Its packets then meet the controller again, which decides
        them under the new policy; conntrack entries of revoked connections carry
        the old pair's ct_mark, which no flow passes any more.  Cached denials are
        dropped so a grant takes effect at the next packet.  NAT sets are resent.
        """
        fx = Effects()
        self.state.denied.clear()
        for sw in self.state.switches.values():
            fx.send(sw.dpid, FlowDelete(
                T_STATEFUL, match(), cookie=KIND_DENY << COOKIE_KIND_SHIFT,
                cookie_mask=COOKIE_KIND_MASK,
            ))
        for pair, ps in list(self.state.pairs.items()):
            if not self._still_allowed(pair, ps):
                fx.extend(self._teardown(pair, now))
        for host in self.index.hosts():
            if host.name not in self.state.foreign:
                fx.nat[host.name] = self.nat_rules(host.name)
        return fx

    def _still_allowed(self, pair: Pair, ps: PairState) -> bool:
        a_ip, b_ip = sorted(pair)
        ea, eb = self.index.endpoint_by_ip(a_ip), self.index.endpoint_by_ip(b_ip)
        if ps.mode == "open":
            return (
                ea is not None and eb is not None
                and self._fully_open(ea, eb) and self._fully_open(eb, ea)
            )
        if ea is not None and eb is not None and self._fully_open(ea, eb) and \
                self._fully_open(eb, ea):
            return False  # now fully open: go back to cheap pair flows
        for g_src, proto, port in ps.grants:
            src, dst = (ea, eb) if g_src == a_ip else (eb, ea)
            dst_ip = b_ip if g_src == a_ip else a_ip
            d = self.verdict(g_src, src, dst_ip, dst, proto or 0, port)
            if d.verdict is not Verdict.ALLOW:
                return False
            if proto is None and d.port_specific:
                return False  # granted for every port, now decided per port
        return True

    # periodic -------------------------------------------------------------------------
    def tick(self, now: float) -> Effects:
        fx = Effects()
        for pair, setup in list(self.state.pending.items()):
            if now - setup.started > SETUP_TIMEOUT:
                fx.extend(self._fail_setup(pair))
        for sw in self.state.switches.values():
            fx.send(sw.dpid, RequestFlowStats(T_ALL))
        for host in sorted(self.state.foreign):
            if self.state.exports.get(host, Export()).sent is None:
                fx.extend(self._export(host, now))  # the last one failed: again
        return fx

    # views ----------------------------------------------------------------------------
    def live_routes(self, now: float, host: str | None = None) -> list[dict[str, object]]:
        """Connections with at least one installed flow, as GET /routes shows them."""
        seen: dict[Pair, dict[str, object]] = {}
        for sw in self.state.switches.values():
            for rec in sw.flows.values():
                if rec.pending:
                    continue
                pair = rec.pair
                row = seen.get(pair)
                if row is None:
                    a, b = sorted(pair)
                    ea, eb = self.index.endpoint_by_ip(a), self.index.endpoint_by_ip(b)
                    if ea is None and eb is None:
                        continue
                    ps = self.state.pairs.get(pair)
                    row = {
                        "src": ea.name if ea else str(a),
                        "src_ip": str(a),
                        "dst": eb.name if eb else str(b),
                        "dst_ip": str(b),
                        "src_host": ea.host if ea else "",
                        "dst_host": eb.host if eb else "",
                        "path": "external" if ea is None or eb is None
                        else "local" if ea.host == eb.host else self._path(ea.host, eb.host),
                        "mode": ps.mode if ps else "open",
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


# --- decisions ------------------------------------------------------------------------
def decide_connection(
    index: DesiredIndex,
    src_ip: IPv4,
    src: Endpoint | None,
    dst_ip: IPv4,
    dst: Endpoint | None,
    proto: int,
    port: int | None,
) -> Decision:
    """The datapath's verdict for src_ip -> dst_ip proto/port; either end may be outside.

    * container -> container: `policy.decide`;
    * container -> outside daolinet: `policy.decide_egress` (the network's `external`);
      an address inside a daolinet subnet that is no container is denied;
    * outside -> container: `policy.decide` as it is (rules with a CIDR or `any`
      source; default deny), so `GET /trace` from an outside address agrees.  The
      host kernel lets in only published ports (DNAT); this decides what of it
      reaches the container.
    """
    if dst is None:
        if src is None:
            return Decision(Verdict.DENY, "neither end is a daolinet container", "default")
        if any(dst_ip in n.subnet for n in index.networks()):
            return Decision(Verdict.DENY, f"no container has address {dst_ip}", "default")
        return decide_egress(index, src)
    return decide(index, src_ip, dst, proto, port, src)


# --- helpers ---------------------------------------------------------------------------
def _grant_port(d: Decision, proto: int, port: int | None) -> tuple[int | None, int | None]:
    """What a grant matches: every protocol and port, or this protocol (and port)."""
    if not d.port_specific:
        return (None, None)
    return (proto, port if proto in (IP_PROTO_TCP, IP_PROTO_UDP) else None)


def _l4(proto: int, port: int | None, side: str) -> dict[str, MatchValue]:
    if port is None or proto not in (IP_PROTO_TCP, IP_PROTO_UDP):
        return {}
    name = "tcp" if proto == IP_PROTO_TCP else "udp"
    return {f"{name}_{side}": port}


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


def _delete_guard(port_no: int) -> tuple[FlowDelete, MeterDelete]:
    """Remove a port's fixed flows (its metered miss flow goes with its meter)."""
    return (
        FlowDelete(
            T_CLASSIFY, match(in_port=port_no), cookie=KIND_GUARD << COOKIE_KIND_SHIFT,
            cookie_mask=COOKIE_KIND_MASK,
        ),
        MeterDelete(port_no),
    )


def _local_route(ep: Endpoint) -> KernelRoute:
    return KernelRoute(kind="local", dst=ep.ip, lladdr=ep.mac)


def _via_route(dst: IPv4, via: IPv4) -> KernelRoute:
    return KernelRoute(kind="via", dst=dst, via=via)
