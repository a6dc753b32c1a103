"""Desired-state changes the core follows at once: an endpoint added or removed
(its local route, guard flows and NAT set; every connection of a removed one goes),
a host removed (its switch and everything the core keeps for it), and a policy
change (every live pair decided again; what is no longer allowed is revoked).
Each connection that goes is a `revoked` entry of the connection log saying why."""

from __future__ import annotations

from controller.datapath.core import connlog
from controller.datapath.core.announce import Announcer
from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.decisions import decide_connection, still_allowed
from controller.datapath.core.flows import delete_guard, guard
from controller.datapath.core.routing import local_route
from controller.datapath.core.setup import Setups
from controller.datapath.effects import Effects, KernelRouteDelta
from controller.datapath.messages import FlowDelete, match
from controller.datapath.state import Pair, PairState
from controller.datapath.tables import COOKIE_KIND_MASK, COOKIE_KIND_SHIFT, KIND_DENY, T_STATEFUL
from controller.desired.models import Endpoint, Host
from controller.desired.policy import Verdict


class DesiredChanges(Part):
    def __init__(self, ctx: CoreContext, announcer: Announcer, setups: Setups) -> None:
        super().__init__(ctx)
        self.announcer = announcer
        self.setups = setups

    def endpoint_added(self, ep: Endpoint) -> Effects:
        fx = Effects()
        if ep.host in self.state.foreign:
            return fx  # its host's replica announces it there
        fx.deltas.append(KernelRouteDelta(ep.host, None, add=(local_route(ep),)))
        sw = self.state.switch_of(ep.host)
        port = sw.port_no(ep.port) if sw else None
        if sw is not None and port is not None:
            fx.send(sw.dpid, *guard(self.state, ep, port))
        fx.nat[ep.host] = self.announcer.nat_rules(ep.host)
        return fx

    def _revoke(
        self, fx: Effects, pair: Pair, now: float | None, ended_by: str,
        unsynced: dict[str, None],
    ) -> None:
        """Tear a live pair down, logging it as revoked (`ended_by` says why); the
        hosts whose routes must follow are added to `unsynced` (`_sync`)."""
        ps = self.state.pairs.get(pair)
        if ps is not None and ps.opened is not None:
            fx.connections.append(
                connlog.revoked(self.state.switches.values(), pair, ps, now, ended_by)
            )
        fx.extend(self.setups.teardown(pair, unsynced))

    def _sync(self, fx: Effects, hosts: dict[str, None]) -> None:
        """Sync the routes of each host once, after every teardown of a change (a
        container with N connections on one host was N syncs of it)."""
        for host in hosts:
            fx.extend(self.announcer.sync_routes(host))

    def _why_removed(self, ep: Endpoint) -> str:
        """What took a removed endpoint away, as the pinned desired state tells."""
        if self.desired.host(ep.host) is None:
            return f"host {ep.host} removed"
        now = self.desired.endpoint_by_ip(ep.ip)
        if now is not None and now.name == ep.name and now.host != ep.host:
            return f"container {ep.name} moved from host {ep.host} to {now.host}"
        return f"container {ep.name} removed"

    def _why_revoked(self, ps: PairState) -> str:
        """What a policy change revoking `ps` decides now for its opening direction."""
        o = ps.opened
        assert o is not None
        d = decide_connection(
            self.desired, o.src_ip, self.desired.endpoint_by_ip(o.src_ip), o.dst_ip,
            self.desired.endpoint_by_ip(o.dst_ip), o.proto, o.dport,
        )
        if d.verdict is Verdict.ALLOW:
            return f"policy change: flows re-made at the next packet ({d.reason})"
        return f"policy change: now denied by {d.reason}"

    def endpoint_removed(self, ep: Endpoint, now: float | None = None) -> Effects:
        """Tear down every connection of a removed (or moved) endpoint at once."""
        fx = Effects()
        for pair in [p for p in self.state.pending if ep.ip in p]:  # setups under way
            fx.extend(self.setups.fail(pair))
        why = self._why_removed(ep)
        # A pair has state only while it has flows or a setup under way
        # (CoreState.forget_if_idle), and the setups are failed: its pairs with
        # flows are all there is to tear down (an index, not a scan of every flow).
        unsynced: dict[str, None] = {}
        for pair in self.state.live.pairs_of(ep.ip):
            self._revoke(fx, pair, now, why, unsynced)
        self._sync(fx, unsynced)
        home = self.state.switch_of(ep.host)
        port = home.port_no(ep.port) if home else None
        if home is not None and port is not None:
            fx.send(home.dpid, *delete_guard(port))
        if ep.host in self.state.foreign:
            return fx
        fx.deltas.append(KernelRouteDelta(ep.host, None, remove=(local_route(ep),)))
        fx.nat[ep.host] = self.announcer.nat_rules(ep.host)
        return fx

    def host_removed(self, host: Host, now: float | None = None) -> Effects:
        """Forget a removed host: its switch (every pair with a flow there is torn
        down on every switch, with the routes it needed), its setups under way, its
        routes, exports, imports and counters; every other host's routes are derived
        again, so none goes through it any more.  Its endpoints were removed first
        (`EndpointRemoved`, in the same change).  Its switch, if still connected,
        is an unknown bridge from now on: it gets nothing (secure mode)."""
        fx = Effects()
        sw = self.state.switches.get(host.dpid)
        if sw is not None:
            unsynced: dict[str, None] = {}
            for pair in list(sw.by_pair):
                self._revoke(fx, pair, now, f"host {host.name} removed", unsynced)
            unsynced.pop(host.name, None)  # its routes go with it
            self._sync(fx, unsynced)
            fx.extend(self.setups.fail_on_switch(sw.dpid))
            self.state.drop_switch(sw.dpid)  # its flows leave the pair counts too
            self.state.forget_idle_pairs()
        self.state.budgets.pop(host.dpid, None)
        self.state.denied = {k: t for k, t in self.state.denied.items() if k[0] != host.dpid}
        self.state.routes.pop(host.name, None)
        self.state.exports.pop(host.name, None)
        self.state.imports.pop(host.name, None)
        self.state.host_counters.pop(host.name, None)
        self.state.live_denied.pop(host.name, None)
        self.state.live_spoofed.pop(host.name, None)
        self.state.foreign.discard(host.name)
        for other in self.desired.hosts():
            fx.extend(self.announcer.sync_routes(other.name, partners=False))
        # Deltas for the removed host itself (from the teardowns) go nowhere: its
        # agent's stream is closed.
        fx.deltas = [d for d in fx.deltas if d.host != host.name]
        fx.nat.pop(host.name, None)
        return fx

    def policy_changed(self, now: float | None = None) -> Effects:
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
        unsynced: dict[str, None] = {}
        for pair, ps in list(self.state.pairs.items()):
            if not still_allowed(self.desired, pair, ps):
                why = self._why_revoked(ps) if ps.opened is not None else ""
                self._revoke(fx, pair, now, why, unsynced)
        self._sync(fx, unsynced)
        for host in self.desired.hosts():
            if host.name not in self.state.foreign:
                fx.nat[host.name] = self.announcer.nat_rules(host.name)
        return fx
