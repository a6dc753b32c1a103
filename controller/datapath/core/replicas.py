"""Masters spread over replicas (controller/datapath/needs.py): which hosts another
replica serves, handing a switch over, and the needs other replicas' switches
export to our hosts (imports) and the answers to ours."""

from __future__ import annotations

from collections.abc import Iterable

from controller.datapath.core.announce import Announcer
from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.routing import Routing
from controller.datapath.core.setup import Setups
from controller.datapath.effects import Effects
from controller.datapath.needs import ImportDone, ImportTable, Needs
from controller.datapath.state import Switch


class Replicas(Part):
    def __init__(
        self, ctx: CoreContext, routing: Routing, announcer: Announcer, setups: Setups
    ) -> None:
        super().__init__(ctx)
        self.routing = routing
        self.announcer = announcer
        self.setups = setups

    def set_foreign(self, hosts: Iterable[str], generation: int) -> Effects:
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
            fx.extend(self.announcer.export(host))
        return fx

    def _hand_over(self, sw: Switch) -> Effects:
        mine = [x.host for x in self.state.switches.values() if x is not sw]
        for host in mine:
            self.state.imports.setdefault(host, ImportTable()).merge(
                self.state.generation, self.state.next_token(),
                self.routing.exported(host, [sw]),
            )
        fx = self.setups.fail_on_switch(sw.dpid)
        self.state.drop_switch(sw.dpid)
        self.state.forget_idle_pairs()
        return fx

    def needs_imported(
        self, host: str, generation: int, token: int, needs: dict[int, Needs], ref: int
    ) -> Effects:
        """Another replica's switches' needs on our `host` (a `NeedsExport`); answered
        with `ImportDone(ref)` once the host's agent holds them."""
        fx = Effects()
        if host in self.state.foreign or self.desired.host(host) is None:
            fx.imports_done.append(ImportDone(ref, False))
            return fx
        self.state.imports.setdefault(host, ImportTable()).merge(generation, token, needs)
        if not self.announcer.is_synced(host):
            # Kept for the host's snapshot, but nothing holds them yet: the exporter
            # fails what waits for them and exports again (`tick`).
            fx.imports_done.append(ImportDone(ref, False))
            return fx
        fx.extend(self.announcer.sync_routes(host, partners=False))
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
        return self.setups.answered(token, ok, now)
