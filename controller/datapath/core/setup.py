"""Connection setup and teardown: a PacketIn is decided (allowed: its flows are
planned and installed once the routes they need are acknowledged; denied: a drop
flow for a while), a setup that cannot complete fails, a pair's flows go at once
when it is torn down.

Policy (docs/architecture.md, "Policy enforcement"): a pair whose both directions
are allowed for every protocol and port gets today's cheap pair flows in table 1;
any other pair is *stateful*: its flows live in table 2, after conntrack, and only
a granted (protocol, port) may commit a connection; replies pass as established.
"""

from __future__ import annotations

from typing import Literal

from controller.datapath.core.announce import Announcer
from controller.datapath.core.connlog import decision_event
from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.decisions import decide_connection, grant_port, open_both_ways
from controller.datapath.core.flows import (
    FlowPlan,
    delete_strict,
    deliver,
    first_packet_out,
    l4,
)
from controller.datapath.core.routing import Routing
from controller.datapath.effects import Effects
from controller.datapath.events import PacketInfo
from controller.datapath.messages import (
    CT_INV,
    CT_NEW,
    CT_RPL,
    CT_TRK,
    ETH_TYPE_IP,
    OFPFF_SEND_FLOW_REM,
    OFPP_LOCAL,
    OFPP_TABLE,
    FlowAdd,
    MatchValue,
    OFMessage,
    Output,
    PacketOut,
    match,
)
from controller.datapath.needs import Export, ImportDone
from controller.datapath.state import (
    DROP_SWITCH_BUDGET,
    DROP_UNKNOWN_PORT,
    Counters,
    FlowKey,
    FlowRecord,
    Grant,
    Pair,
    PairState,
    PendingSetup,
    Switch,
)
from controller.datapath.tables import KIND_DENY, PRIO_STATEFUL_DENY, T_ROUTE, T_STATEFUL
from controller.desired.models import Endpoint
from controller.desired.policy import IP_PROTO_ICMP, Decision, Verdict

# A setup whose routes are not acknowledged within this time fails (its flows are
# dropped and the next packet tries again), so a dead agent cannot wedge a pair.
SETUP_TIMEOUT = 3.0
# How many packets of one pair are held while its routes are being installed.
PENDING_PACKETS = 16
# A PacketIn an installed open flow should have taken, this long after it was
# installed, makes its switch's cache suspect (dumped at the next tick).
SUSPECT_AFTER = 2.0
# What denied a packet that no policy was asked about (the connection log's reason).
SPOOFED = Decision(Verdict.DENY, "source address or MAC not the port's own", "default")
TO_ITSELF = Decision(Verdict.DENY, "a container's packet to its own address", "default")
NOT_HERE = Decision(Verdict.DENY, "from the host's kernel to no container of this host",
                    "default")


class Setups(Part):
    def __init__(
        self, ctx: CoreContext, routing: Routing, announcer: Announcer, plan: FlowPlan
    ) -> None:
        super().__init__(ctx)
        self.routing = routing
        self.announcer = announcer
        self.plan = plan

    # packets -----------------------------------------------------------------------
    def packet_in(self, dpid: int, pkt: PacketInfo, now: float) -> Effects:
        sw = self.state.switches.get(dpid)
        if sw is None:
            return Effects()
        if not self.state.within_budget(dpid, now):
            self.state.drop(sw.host, DROP_SWITCH_BUDGET)  # no decision, nothing sent
            return Effects()
        self.state.count(sw.host, "packet_ins")
        if pkt.table != T_STATEFUL and self._has_stateful(sw, pkt):
            # A packet that met no flow in table 1 although its pair is stateful
            # here (a race with our own flow-mods): let it take the tables again.
            fx = Effects()
            fx.send(sw.dpid, PacketOut(pkt.in_port, (Output(OFPP_TABLE),), pkt.data))
            return fx
        self._check_cache(sw, pkt, now)
        dst = self.desired.endpoint_by_ip(pkt.ip_dst)
        if pkt.in_port == OFPP_LOCAL:
            return self._from_kernel(sw, pkt, dst, now)
        name = sw.port_name(pkt.in_port)
        src = self.desired.endpoint_by_port(sw.host, name) if name else None
        if src is None:
            self.state.drop(sw.host, DROP_UNKNOWN_PORT)
            return Effects()  # a port that is not (or no longer) an endpoint
        if pkt.ip_src != src.ip or pkt.eth_src != src.mac:
            return self._deny(sw, pkt, now, SPOOFED, src, dst)
        if dst is not None and dst.ip == src.ip:
            return self._deny(sw, pkt, now, TO_ITSELF, src, dst)
        return self._decide_and_setup(sw, src, dst, pkt, now)

    def _has_stateful(self, sw: Switch, pkt: PacketInfo) -> bool:
        pair = frozenset((pkt.ip_src, pkt.ip_dst))
        ps = self.state.pairs.get(pair)
        if ps is None or ps.mode != "stateful":
            return False
        return any(
            r.in_port == pkt.in_port and r.src == pkt.ip_src and r.dst == pkt.ip_dst
            for r in (sw.flows[k] for k in sw.pair_keys(pair))
        )

    def _check_cache(self, sw: Switch, pkt: PacketInfo, now: float) -> None:
        """A packet of an open pair that one of our flows on this switch would have
        taken, installed longer ago than a flow-mod takes: the switch no longer
        holds it (a FlowRemoved we never got), so dump this switch at the next tick."""
        if pkt.table != T_STATEFUL:
            return  # not a miss of table 1 (see _has_stateful)
        pair = frozenset((pkt.ip_src, pkt.ip_dst))
        for key in sw.by_pair.get(pair, ()):
            r = sw.flows[key]
            if (
                key[0] == T_ROUTE and not r.pending and r.in_port == pkt.in_port
                and r.src == pkt.ip_src and now - r.installed_at > SUSPECT_AFTER
            ):
                sw.suspect = True
                return

    def _from_kernel(
        self, sw: Switch, pkt: PacketInfo, dst: Endpoint | None, now: float
    ) -> Effects:
        """A packet the host kernel routed into the bridge with no flow for it."""
        if dst is None or dst.host != sw.host:
            return self._deny(sw, pkt, now, NOT_HERE, None, dst)
        src = self.desired.endpoint_by_ip(pkt.ip_src)
        if src is not None:
            return self._decide_and_setup(sw, src, dst, pkt, now)
        if pkt.ip_proto == IP_PROTO_ICMP and self.desired.host_by_address(pkt.ip_src):
            # ICMP errors of hosts on the path (traceroute's "time exceeded").
            fx = Effects()
            port = sw.port_no(dst.port)
            if port is not None:
                fx.send(sw.dpid, PacketOut(pkt.in_port, deliver(dst, port), pkt.data))
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
            d = decide_connection(
                self.desired, pkt.ip_dst, dst, pkt.ip_src, src, pkt.ip_proto, pkt.tp_src
            )
            grant: Grant = (pkt.ip_dst, *grant_port(d, pkt.ip_proto, pkt.tp_src))
        else:
            d = decide_connection(
                self.desired, pkt.ip_src, src, pkt.ip_dst, dst, pkt.ip_proto, pkt.tp_dst
            )
            grant = (pkt.ip_src, *grant_port(d, pkt.ip_proto, pkt.tp_dst))
        if d.verdict is not Verdict.ALLOW:
            return self._deny(sw, pkt, now, d, src, dst, bool(reply))
        mode: Literal["open", "stateful"] = (
            "open" if open_both_ways(self.desired, src, dst) else "stateful"
        )
        return self._setup(sw, src, dst, pkt, mode, grant, now, d, bool(reply))

    def _deny(
        self,
        sw: Switch,
        pkt: PacketInfo,
        now: float,
        d: Decision,
        src: Endpoint | None,
        dst: Endpoint | None,
        reply: bool = False,
    ) -> Effects:
        """Drop what was denied in the switch for a while (table 2, after conntrack).

        Below the established flows, so it never cuts the replies of an allowed
        connection; port-specific when the verdict was.  Every denied PacketIn is an
        event of the connection log (which summarises a flood: one entry per pair
        and interval); the drop flow's packets join it when the flow goes.
        """
        self.state.count(sw.host, "denials")
        port_specific = d.port_specific
        event = decision_event(self.desired, "denied", sw.host, pkt, src, dst, d, reply, None)
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
                fields.update(l4(pkt.ip_proto, pkt.tp_src, "src"))
            else:
                fields.update(l4(pkt.ip_proto, pkt.tp_dst, "dst"))
        fx = Effects()
        fx.connections.append(event)
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
        self.state.note_deny_flow(flow.cookie, event)
        fx.send(sw.dpid, flow)
        return fx

    # setups ------------------------------------------------------------------------
    def _setup(
        self,
        sw: Switch,
        src: Endpoint | None,
        dst: Endpoint | None,
        pkt: PacketInfo,
        mode: Literal["open", "stateful"],
        grant: Grant,
        now: float,
        d: Decision,
        reply: bool,
    ) -> Effects:
        fx = Effects()
        pair = frozenset((pkt.ip_src, pkt.ip_dst))
        legs = self.plan.legs(pkt.ip_src, src, pkt.ip_dst, dst)
        ps = self.state.pairs.get(pair)
        live = ps is not None and self.state.pair_has_flows(pair)
        if ps is not None and live and ps.mode != mode:
            fx.extend(self.teardown(pair))  # the pair changes its way of forwarding
            live = False
        if ps is None or not live:
            ps = self.state.pairs[pair] = PairState(mode, self.state.next_mark())
        waiting = self.state.pending.get(pair)
        out = first_packet_out(sw, mode, dst, pkt)
        if waiting is not None:
            if out is not None and len(waiting.packets) < PENDING_PACKETS:
                waiting.packets.append(out)
            return fx
        if legs is None or out is None:
            self.state.count(sw.host, "failed_setups")
            return fx
        if not live or (mode == "stateful" and grant not in ps.grants):
            # A new connection for the log: a pair set up, or a new grant of a
            # stateful one.  A packet that overtook its flows (it comes back as a
            # PacketIn and the same flows are planned again) is no new decision.
            path = (
                "external" if src is None or dst is None
                else self.routing.path(src.host, dst.host)
            )
            event = decision_event(self.desired, "allowed", sw.host, pkt, src, dst, d, reply,
                                   path)
            fx.connections.append(event)
            if ps.opened is None:
                ps.opened = event
        ps.grants.add(grant)
        plan = self.plan.records(legs, ps, grant)
        tokens: set[int] = set()
        keys: list[tuple[int, FlowKey]] = []
        for swx, rec in plan:
            rec.installed_at = now
            rec.last_active = now
            rec.pending = True
            swx.put(rec)
            keys.append((swx.dpid, rec.key))
        for host in {swx.host for swx, _ in plan}:
            fx.extend(self.announcer.sync_routes(host))
            routes = self.state.host_routes(host)
            tokens |= {
                routes.unacked[r.needs_route[0]]
                for swx, r in plan
                if swx.host == host and r.needs_route and r.needs_route[0] in routes.unacked
            }
        tokens |= self._relay_tokens(plan)
        tokens |= self._export_tokens(plan)
        setup = PendingSetup(pair, tokens, keys, [out], now, resubmit=mode == "stateful")
        if tokens:
            self.state.pending[pair] = setup
            self.state.wait(pair, tokens)
            return fx
        fx.extend(self._install(setup, now, sw.host))
        return fx

    def _relay_tokens(self, plan: list[tuple[Switch, FlowRecord]]) -> set[int]:
        """Tokens of relay routes a setup has to wait for."""
        out: set[int] = set()
        for swx, r in plan:
            if r.needs_route is None:
                continue
            relay = self.routing.relay_of(swx.host, r.needs_route[1])
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
            relay = self.routing.relay_of(swx.host, r.needs_route[1])
            dst = self.desired.endpoint_by_ip(r.needs_route[0])
            if dst is not None and self.routing.is_receiver(dst.host, r.needs_route):
                hosts.add(dst.host)
            if relay is not None:
                hosts.add(relay)
        return {
            t for h in hosts & self.state.foreign
            if (t := self.state.exports.get(h, Export()).unacked) is not None
        }

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
            c.setup_latency.observe(now - setup.started)
        return fx

    def answered(self, token: int, ok: bool, now: float) -> Effects:
        """Setups and imports waiting for `token` go on (or fail)."""
        fx = Effects()
        for pair in self.state.waiting_on.pop(token, {}):
            setup = self.state.pending.get(pair)
            if setup is None or token not in setup.waiting:
                continue
            if not ok:
                fx.extend(self.fail(pair))
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

    def fail(self, pair: Pair) -> Effects:
        """A setup that cannot complete: its pending flows go (and their routes)."""
        fx = Effects()
        setup = self.state.pending.pop(pair, None)
        if setup is None:
            return fx
        self.state.unwait(pair, setup.waiting)
        hosts: set[str] = set()
        for dpid, key in setup.flows:
            sw = self.state.switches.get(dpid)
            if sw is not None and key in sw.flows and sw.flows[key].pending:
                sw.pop(key)
                hosts.add(sw.host)
        self.state.forget_if_idle(pair)
        first = self.state.switches.get(setup.packets[0][0]) if setup.packets else None
        self.state.count(first.host if first else "", "failed_setups")
        for host in hosts:
            fx.extend(self.announcer.sync_routes(host))
        return fx

    def fail_on_switch(self, dpid: int) -> Effects:
        """Fail every setup with a flow on switch `dpid` (it went away or elsewhere)."""
        fx = Effects()
        for pair, setup in list(self.state.pending.items()):
            if any(d == dpid for d, _ in setup.flows):
                fx.extend(self.fail(pair))
        return fx

    def fail_expired(self, now: float) -> Effects:
        """Fail the setups that waited longer than SETUP_TIMEOUT."""
        fx = Effects()
        for pair, setup in list(self.state.pending.items()):
            if now - setup.started > SETUP_TIMEOUT:
                fx.extend(self.fail(pair))
        return fx

    def teardown(self, pair: Pair, unsynced: dict[str, None] | None = None) -> Effects:
        """Delete every flow of a pair on every switch (and the routes they needed).

        With `unsynced`, the hosts whose routes must follow are added to it instead
        of synced here: a caller tearing many pairs down syncs each host once."""
        fx = Effects()
        if pair in self.state.pending:
            fx.extend(self.fail(pair))
        for sw in self.state.switches.values():
            gone = sw.pair_keys(pair)
            for key in gone:
                fx.send(sw.dpid, delete_strict(sw.pop(key).flow))
            if gone and unsynced is not None:
                unsynced[sw.host] = None
            elif gone:
                fx.extend(self.announcer.sync_routes(sw.host))
        self.state.pairs.pop(pair, None)
        return fx
