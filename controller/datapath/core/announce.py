"""Announcing: the route deltas and snapshots each agent gets, the exports to the
replicas serving other hosts (controller/datapath/needs.py), and the NAT sets."""

from __future__ import annotations

from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.routing import Routing, local_route
from controller.datapath.effects import Effects, KernelRouteDelta, RouteSnapshot
from controller.datapath.needs import Export, NeedsExport, adds
from controller.desired.models import NatRule


class Announcer(Part):
    def __init__(self, ctx: CoreContext, routing: Routing) -> None:
        super().__init__(ctx)
        self.routing = routing

    def sync_routes(self, host: str, partners: bool = True) -> Effects:
        """Announce to `host` the via routes its flows need and retract the rest.

        With `partners`, the hosts whose needs follow `host`'s flows (relays, and
        the receivers of its cross-site connections) are brought along.
        """
        if host in self.state.foreign:
            return self.export(host)  # its replica's core decides what it holds
        fx = Effects()
        routes = self.state.host_routes(host)
        needed = self.routing.needed(host)
        kernel_route = self.routing.kernel_route
        remove = [kernel_route(d, v) for d, v in routes.announced.items() if needed.get(d) != v]
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
                    tuple(kernel_route(d, v) for d, v in sorted(add.items())),
                    tuple(sorted(remove, key=lambda r: r.dst)),
                )
            )
        if partners:
            for other in self.routing.partners_of(host):
                fx.extend(self.sync_routes(other, partners=False))
        return fx

    def export(self, host: str) -> Effects:
        """Send the replica serving `host` our synced switches' needs there, if they
        changed since the last export."""
        fx = Effects()
        ex = self.state.exports.setdefault(host, Export())
        synced = [sw for sw in self.state.switches.values() if sw.synced]
        needs = self.routing.exported(host, synced)
        if needs == (ex.sent or {}):
            return fx  # unchanged (or, with nothing known there, nothing to say)
        token = self.state.next_token()
        grows = adds(ex.sent, needs)
        fx.exports.append(NeedsExport(host, self.state.generation, token, needs, grows))
        ex.sent = needs
        if grows:
            ex.unacked = token
        return fx

    def settle(self, host: str, token: int, applied: bool) -> None:
        """The agent answered `token`: its routes are no longer in flight, and if it
        could not apply them, no longer announced either."""
        routes = self.state.host_routes(host)
        for dst, t in list(routes.unacked.items()):
            if t == token:
                del routes.unacked[dst]
                if not applied:
                    routes.announced.pop(dst, None)

    def snapshot(self, host: str) -> Effects:
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
                    self.state.unwait(setup.pair, setup.waiting & superseded)
                    setup.waiting = (setup.waiting - superseded) | {token}
                    self.state.wait(setup.pair, {token})
            for ref, waits in self.state.import_waits.items():
                if waits & superseded:
                    self.state.import_waits[ref] = (waits - superseded) | {token}
        routes.announced = self.routing.needed(host)
        routes.unacked = dict.fromkeys(routes.announced, token)
        wanted = [local_route(e) for e in self.desired.endpoints(host=host)]
        wanted += [self.routing.kernel_route(d, v) for d, v in sorted(routes.announced.items())]
        fx = Effects()
        fx.snapshots.append(RouteSnapshot(host, token, tuple(wanted)))
        return fx

    def nat_rules(self, host: str) -> list[NatRule]:
        """The host-kernel NAT `host` must hold: its published ports and masquerades."""
        h = self.desired.host(host)
        if h is None:
            return []
        rules: list[NatRule] = []
        networks = self.desired.networks()
        local = self.desired.endpoints(host=host)
        by_name = {ep.name: ep for ep in local}
        for pp in self.desired.published_ports():  # by container name, like `local`
            ep = by_name.get(pp.container)
            if ep is not None:
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
