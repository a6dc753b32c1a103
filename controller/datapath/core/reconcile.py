"""Reconciliation with the switches: their connections and ports, their flow dumps
(level-triggered: adopt what we do not know, forget what is gone) and flow
removals, and the periodic tick that asks for dumps and retries what failed."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import replace
from typing import Literal

from controller.datapath.core import connlog
from controller.datapath.core.announce import Announcer
from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.flows import delete_guard, delete_strict, guard, out_port
from controller.datapath.core.routing import Routing
from controller.datapath.core.setup import Setups
from controller.datapath.effects import Effects
from controller.datapath.events import DumpedFlow, PortInfo, RemovedFlow
from controller.datapath.messages import (
    CT_RPL,
    OFPM_ALL,
    OFPP_LOCAL,
    FlowAdd,
    FlowDelete,
    MeterDelete,
    Output,
    RequestFlowStats,
    RequestPortDesc,
)
from controller.datapath.needs import Export
from controller.datapath.state import FlowKey, FlowRecord, PairState, Switch, parse_ip
from controller.datapath.tables import (
    KIND_CONNECTION,
    KIND_DENY,
    KIND_GUARD,
    PRIO_GRANT,
    PRIO_SPOOF,
    T_ALL,
    T_ROUTE,
    T_STATEFUL,
    base_flows,
    cookie_kind,
)

IPv4 = ipaddress.IPv4Address

# A FlowRemoved notice can race a re-install; a flow missing from a dump is only
# believed gone when it was installed longer ago than this.
DUMP_GRACE = 2.0


class Reconciler(Part):
    def __init__(
        self, ctx: CoreContext, routing: Routing, announcer: Announcer, setups: Setups
    ) -> None:
        super().__init__(ctx)
        self.routing = routing
        self.announcer = announcer
        self.setups = setups

    # switch lifecycle ------------------------------------------------------------
    def switch_connected(self, dpid: int) -> Effects:
        fx = Effects()
        host = self.desired.host_by_dpid(dpid)
        if host is None:
            return fx  # an unknown bridge gets nothing: secure mode drops its traffic
        if host.name in self.state.foreign:
            return fx  # another replica masters it
        self.state.add_switch(dpid, host.name)
        self.state.denied = {k: t for k, t in self.state.denied.items() if k[0] != dpid}
        # Base flows are added, never flushed: after a controller restart the
        # switch still forwards live connections with what it has.
        # Meters are re-made with the ports' fixed flows (port description below);
        # the metered flows leave with them, the unmetered miss serves meanwhile.
        fx.send(dpid, MeterDelete(OFPM_ALL))
        fx.send(dpid, *base_flows())
        fx.send(dpid, RequestPortDesc(), RequestFlowStats(T_ALL))
        return fx

    def switch_disconnected(self, dpid: int) -> Effects:
        if self.state.drop_switch(dpid) is None:
            return Effects()
        fx = self.setups.fail_on_switch(dpid)
        self.state.forget_idle_pairs()
        return fx

    def ports_described(self, dpid: int, ports: Iterable[PortInfo]) -> Effects:
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        sw.clear_ports()
        # LOCAL first: the ports' DNS flows lead to it (flows.guard)
        for p in sorted(ports, key=lambda p: p.port_no != OFPP_LOCAL):
            fx.extend(self._learn_port(sw, p))
        return fx

    def port_added(self, dpid: int, port: PortInfo) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        return self._learn_port(sw, port)

    def port_removed(self, dpid: int, port: PortInfo, now: float | None = None) -> Effects:
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        sw.drop_port(port.name)
        fx.send(dpid, *delete_guard(port.port_no))
        # Flows of a vanished port can never match again; forget them now so the
        # routes they needed are retracted without waiting for the idle timeout.
        gone = [
            k for k, r in sw.flows.items()
            if r.in_port == port.port_no or out_port(r) == port.port_no
        ]
        why = self._why_port_gone(sw, port)
        for key in gone:
            rec = sw.pop(key)
            fx.send(dpid, delete_strict(rec.flow))
            ps = self.state.pairs.get(rec.pair)
            if ps is not None:
                lived = now - rec.installed_at if now is not None else 0.0
                connlog.account(ps, rec, rec.packet_count, 0, lived)
            self.state.forget_if_idle(rec.pair)
            if ps is not None and ps.opened is not None and rec.pair not in self.state.pairs:
                # Its last flow went with the port (a container detached before
                # its endpoint was removed: Docker's order): logged as revoked.
                ended = connlog.closed(ps, "revoked", round(ps.duration, 3))
                fx.connections.append(replace(ended, ended_by=why))
        fx.extend(self.announcer.sync_routes(sw.host))
        return fx

    def _why_port_gone(self, sw: Switch, port: PortInfo) -> str:
        ep = self.desired.endpoint_by_port(sw.host, port.name)
        where = f"port {port.name} on host {sw.host} removed"
        return f"container {ep.name} detached ({where})" if ep is not None else where

    def _learn_port(self, sw: Switch, port: PortInfo) -> Effects:
        fx = Effects()
        if port.port_no == OFPP_LOCAL:
            known, sw.local_mac = sw.local_mac, port.hw_addr
            if known != port.hw_addr:  # the ports' DNS flows lead to it (flows.guard)
                for name, info in list(sw.ports.items()):
                    ep = self.desired.endpoint_by_port(sw.host, name)
                    if ep is not None and info.port_no != OFPP_LOCAL:
                        fx.send(sw.dpid, *guard(self.state, ep, info.port_no))
        sw.add_port(port)
        ep = self.desired.endpoint_by_port(sw.host, port.name)
        if ep is not None and port.port_no != OFPP_LOCAL:
            fx.send(sw.dpid, *guard(self.state, ep, port.port_no))
        return fx

    # flows -----------------------------------------------------------------------
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
        adopted: list[FlowRecord] = []
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
                adopted.append(rec)
            seen.add(rec.key)
            if f.packet_count != rec.packet_count:
                rec.packet_count = f.packet_count
                rec.last_active = now
        self.state.live_denied[sw.host] = denied
        self.state.live_spoofed[sw.host] = spoofed
        self._open_adopted(sw, adopted)
        for key, rec in list(sw.flows.items()):
            if key not in seen and not rec.pending and now - rec.installed_at > DUMP_GRACE:
                sw.pop(key)
                self.state.forget_if_idle(rec.pair)
        sw.dump_asked = max(sw.dump_asked, now)
        first = not sw.synced
        if first:
            # A reconnect replaced this switch's records: pairs whose flows went
            # with them and are not in the dump go too (once, O(pairs)).
            self.state.forget_idle_pairs()
        sw.synced = True  # before the sync below, so that our exports include it
        fx.extend(self.announcer.sync_routes(sw.host))
        if first:
            fx.synced_hosts.append(sw.host)
            # Its sets replace its previous master's on every host served elsewhere
            # (empty ones too: that master may have exported needs that are gone).
            for other in sorted(self.state.foreign):
                fx.extend(self.announcer.export(other))
        return fx

    def _open_adopted(self, sw: Switch, adopted: list[FlowRecord]) -> None:
        """Give each adopted connection its opening event, once its grants are all
        read, so that its expiry (or revocation) is logged like any other.  Its
        direction: the flow from a container port, the first one set up (a setup
        plans the opening direction first: the lowest cookie)."""
        for pair in {rec.pair for rec in adopted}:
            ps = self.state.pairs.get(pair)
            if ps is None or ps.opened is not None:
                continue
            rec = min((sw.flows[k] for k in sw.by_pair.get(pair, ())),
                      key=lambda r: (r.in_port == OFPP_LOCAL, r.flow.cookie))
            src = self.desired.endpoint_by_ip(rec.src)
            dst = self.desired.endpoint_by_ip(rec.dst)
            path = ("external" if src is None or dst is None
                    else self.routing.path(src.host, dst.host))
            ps.opened = connlog.adopted(self.desired, sw.host, ps, rec, path)

    def _adopt(self, sw: Switch, f: DumpedFlow, now: float) -> FlowRecord | None:
        m = dict(f.match)
        if "ipv4_src" not in m or "ipv4_dst" not in m or "in_port" not in m:
            return None
        ip_src, ip_dst = parse_ip(str(m["ipv4_src"])), parse_ip(str(m["ipv4_dst"]))
        src = self.desired.endpoint_by_ip(ip_src)
        dst = self.desired.endpoint_by_ip(ip_dst)
        if (src is None and dst is None) or f.out_port is None:
            return None
        needs = self.routing.route_need(sw.host, f.out_port, dst) if dst is not None else None
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

    def flows_removed(self, dpid: int, notices: Iterable[RemovedFlow]) -> Effects:
        """Flows went (idle, or deleted).  A connection's last flow going is its
        expiry in the connection log, with what its flows passed; a drop flow's
        packets join the denial it stands for.  The routes of the switch's host are
        synced once for the whole batch: a burst of N notices (flows idling out
        together) was N syncs of the same host, N deltas to its agent."""
        fx = Effects()
        sw = self.state.switches.get(dpid)
        if sw is None:
            return fx
        forgot = False
        for notice in notices:
            if cookie_kind(notice.cookie) == KIND_DENY:
                self.state.count(sw.host, "denied_packets", notice.packet_count)
                denial = self.state.deny_events.pop(notice.cookie, None)
                if denial is not None and notice.packet_count > 0:
                    fx.connections.append(replace(denial, count=notice.packet_count))
                continue
            key = sw.cookies.get(notice.cookie)
            if key is None:
                continue  # stale notice of an older incarnation
            rec = sw.pop(key)
            forgot = True
            ps = self.state.pairs.get(rec.pair)
            if ps is not None:
                connlog.account(ps, rec, notice.packet_count, notice.byte_count,
                                notice.duration)
            self.state.forget_if_idle(rec.pair)
            if ps is not None and ps.opened is not None and rec.pair not in self.state.pairs:
                fx.connections.append(connlog.closed(ps, "expired", ps.duration))
        if forgot:
            fx.extend(self.announcer.sync_routes(sw.host))
        return fx

    # periodic -------------------------------------------------------------------------
    def tick(self, now: float) -> Effects:
        """Fail expired setups, ask the next switches for their flows, export again
        what failed.

        The dump is a safety net (FlowRemoved notices keep the cache right; a
        reconnect dumps in full): each tick asks at most `dumps_per_tick`
        switches, suspect ones first, then those dumped longest ago, so its cost
        does not grow with the number of switches.
        """
        fx = self.setups.fail_expired(now)
        due = sorted(self.state.switches.values(), key=lambda s: (not s.suspect, s.dump_asked))
        for sw in due[: self.state.dumps_per_tick]:
            sw.dump_asked = now
            sw.suspect = False
            fx.send(sw.dpid, RequestFlowStats(T_ALL))
        for host in sorted(self.state.foreign):
            if self.state.exports.get(host, Export()).sent is None:
                fx.extend(self.announcer.export(host))  # the last one failed: again
        return fx
