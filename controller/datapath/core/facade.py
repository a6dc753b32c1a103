"""The pure core of the controller: events in, OpenFlow messages and route requests out.

Nothing here sends anything or reads the clock: every handler takes the version of
the desired state to decide on (`DesiredIndex.view()`, pinned for the call), takes
`now` where it reads the time, and returns an `Effects` value the runtime carries
out.  The per-connection state it keeps (flows per switch, routes announced to
agents) is a cache of what the switches hold and is rebuilt from their flow dumps
after a restart.  `Core` only pins the version and hands each event to the part
whose job it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.datapath.core.announce import Announcer
from controller.datapath.core.changes import DesiredChanges
from controller.datapath.core.context import CoreContext
from controller.datapath.core.flows import FlowPlan
from controller.datapath.core.reconcile import Reconciler
from controller.datapath.core.replicas import Replicas
from controller.datapath.core.routing import Routing
from controller.datapath.core.setup import Setups
from controller.datapath.core.views import Views
from controller.datapath.effects import Effects
from controller.datapath.events import DumpedFlow, PacketInfo, PortInfo, RemovedFlow
from controller.datapath.needs import Needs
from controller.datapath.state import CoreState, Counters
from controller.desired.index import DesiredView
from controller.desired.models import Endpoint, Host, NatRule


class Core:
    """Handlers over (desired version, event, state[, now])."""

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self._ctx = CoreContext(state)
        routing = Routing(self._ctx)
        self._announcer = Announcer(self._ctx, routing)
        self._setups = Setups(self._ctx, routing, self._announcer, FlowPlan(self._ctx, routing))
        self._switches = Reconciler(self._ctx, routing, self._announcer, self._setups)
        self._replicas = Replicas(self._ctx, routing, self._announcer, self._setups)
        self._changes = DesiredChanges(self._ctx, self._announcer, self._setups)
        self._views = Views(self._ctx, routing)

    # switches ----------------------------------------------------------------------
    def switch_connected(self, desired: DesiredView, dpid: int) -> Effects:
        self._ctx.pin(desired)
        return self._switches.switch_connected(dpid)

    def switch_disconnected(self, desired: DesiredView, dpid: int) -> Effects:
        self._ctx.pin(desired)
        return self._switches.switch_disconnected(dpid)

    def ports_described(
        self, desired: DesiredView, dpid: int, ports: Iterable[PortInfo]
    ) -> Effects:
        self._ctx.pin(desired)
        return self._switches.ports_described(dpid, ports)

    def port_added(self, desired: DesiredView, dpid: int, port: PortInfo) -> Effects:
        self._ctx.pin(desired)
        return self._switches.port_added(dpid, port)

    def port_removed(
        self, desired: DesiredView, dpid: int, port: PortInfo, now: float | None = None
    ) -> Effects:
        self._ctx.pin(desired)
        return self._switches.port_removed(dpid, port, now)

    def flows_dumped(
        self, desired: DesiredView, dpid: int, flows: Iterable[DumpedFlow], now: float
    ) -> Effects:
        self._ctx.pin(desired)
        return self._switches.flows_dumped(dpid, flows, now)

    def flow_removed(
        self, desired: DesiredView, dpid: int, flow_cookie: int, packet_count: int,
        byte_count: int = 0, duration: float = 0.0,
    ) -> Effects:
        """One FlowRemoved notice (a batch of one)."""
        notice = RemovedFlow(flow_cookie, packet_count, byte_count, duration)
        return self.flows_removed(desired, dpid, [notice])

    def flows_removed(
        self, desired: DesiredView, dpid: int, notices: Iterable[RemovedFlow]
    ) -> Effects:
        """FlowRemoved notices of one switch, in their order: one route sync for all."""
        self._ctx.pin(desired)
        return self._switches.flows_removed(dpid, notices)

    def tick(self, desired: DesiredView, now: float) -> Effects:
        self._ctx.pin(desired)
        return self._switches.tick(now)

    # connections -----------------------------------------------------------------------
    def packet_in(self, desired: DesiredView, dpid: int, pkt: PacketInfo, now: float) -> Effects:
        self._ctx.pin(desired)
        return self._setups.packet_in(dpid, pkt, now)

    # agents ------------------------------------------------------------------------------
    def routes_acked(self, desired: DesiredView, host: str, token: int, now: float) -> Effects:
        self._ctx.pin(desired)
        self._announcer.settle(host, token, applied=True)
        return self._setups.answered(token, True, now)

    def routes_failed(self, desired: DesiredView, host: str, token: int, now: float) -> Effects:
        self._ctx.pin(desired)
        self._announcer.settle(host, token, applied=False)
        return self._setups.answered(token, False, now)

    def snapshot(self, desired: DesiredView, host: str) -> Effects:
        """Everything `host` must hold (`Effects.snapshots`), for a (re)connecting agent."""
        self._ctx.pin(desired)
        return self._announcer.snapshot(host)

    # other replicas ------------------------------------------------------------------------
    def set_foreign(self, desired: DesiredView, hosts: Iterable[str], generation: int) -> Effects:
        self._ctx.pin(desired)
        return self._replicas.set_foreign(hosts, generation)

    def needs_imported(
        self,
        desired: DesiredView,
        host: str,
        generation: int,
        token: int,
        needs: dict[int, Needs],
        ref: int,
    ) -> Effects:
        self._ctx.pin(desired)
        return self._replicas.needs_imported(host, generation, token, needs, ref)

    def exports_acked(
        self, desired: DesiredView, host: str, token: int, ok: bool, now: float
    ) -> Effects:
        self._ctx.pin(desired)
        return self._replicas.exports_acked(host, token, ok, now)

    # desired-state changes ---------------------------------------------------------------
    def endpoint_added(self, desired: DesiredView, ep: Endpoint) -> Effects:
        self._ctx.pin(desired)
        return self._changes.endpoint_added(ep)

    def endpoint_removed(
        self, desired: DesiredView, ep: Endpoint, now: float | None = None
    ) -> Effects:
        """`now` dates the revocations in the connection log, as for policy_changed."""
        self._ctx.pin(desired)
        return self._changes.endpoint_removed(ep, now)

    def host_removed(self, desired: DesiredView, host: Host, now: float | None = None) -> Effects:
        self._ctx.pin(desired)
        return self._changes.host_removed(host, now)

    def policy_changed(self, desired: DesiredView, now: float | None = None) -> Effects:
        """`now` dates the revocations in the connection log (None: their
        duration is what the removed flows reported)."""
        self._ctx.pin(desired)
        return self._changes.policy_changed(now)

    # views (change nothing) ------------------------------------------------------------------
    def live_routes(
        self, desired: DesiredView, now: float, host: str | None = None
    ) -> list[dict[str, object]]:
        self._ctx.pin(desired)
        return self._views.live_routes(now, host)

    def live_counts(self, desired: DesiredView) -> tuple[int, dict[str, int]]:
        """Live connections, in total and per host (the counts of `live_routes`)."""
        self._ctx.pin(desired)
        return self._views.live_counts()

    def nat_rules(self, desired: DesiredView, host: str) -> list[NatRule]:
        self._ctx.pin(desired)
        return self._announcer.nat_rules(host)

    def is_synced(self, host: str) -> bool:
        return self._announcer.is_synced(host)

    def host_counters(self, host: str) -> Counters:
        return self._views.host_counters(host)

    def total_counters(self) -> Counters:
        return self._views.total_counters()
