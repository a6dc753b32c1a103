"""Read-only views of the core for the API: live connections (GET /routes) and
counters (GET /metrics).  They change nothing."""

from __future__ import annotations

from dataclasses import replace

from controller.datapath.core.context import CoreContext, Part
from controller.datapath.core.routing import Routing
from controller.datapath.state import Counters, Pair


class Views(Part):
    def __init__(self, ctx: CoreContext, routing: Routing) -> None:
        super().__init__(ctx)
        self.routing = routing

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
                    ea, eb = self.desired.endpoint_by_ip(a), self.desired.endpoint_by_ip(b)
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
                        else "local" if ea.host == eb.host
                        else self.routing.path(ea.host, eb.host),
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

    def live_counts(self) -> tuple[int, dict[str, int]]:
        """How many connections `live_routes` would list, in total and per host of
        either end, in one pass over the pairs with flows (for /metrics: it was one
        `live_routes` per host, each over every flow of every switch)."""
        total = 0
        per_host: dict[str, int] = {}
        for pair in self.state.live.pairs():
            if pair in self.state.pending and not self._installed(pair):
                continue  # only flows waiting for their routes
            a, b = sorted(pair)
            ea, eb = self.desired.endpoint_by_ip(a), self.desired.endpoint_by_ip(b)
            if ea is None and eb is None:
                continue
            total += 1
            for h in {e.host for e in (ea, eb) if e is not None}:
                per_host[h] = per_host.get(h, 0) + 1
        return total, per_host

    def _installed(self, pair: Pair) -> bool:
        """Whether `pair` has a flow that is no longer waiting for its routes."""
        return any(
            not sw.flows[k].pending
            for sw in self.state.switches.values() for k in sw.by_pair.get(pair, ())
        )

    def host_counters(self, host: str) -> Counters:
        """A copy of `host`'s counters, with what its live deny/guard flows counted."""
        st = self.state
        c = st.host_counters.get(host, Counters())
        return replace(
            c,
            denied_packets=c.denied_packets + st.live_denied.get(host, 0),
            spoofed_packets=st.live_spoofed.get(host, 0),
            setup_latency=c.setup_latency.copy(),
            packet_ins_dropped=dict(c.packet_ins_dropped),
        )

    def total_counters(self) -> Counters:
        """A copy of the counters of every host, with what live flows counted."""
        st = self.state
        return replace(
            st.counters,
            denied_packets=st.counters.denied_packets + sum(st.live_denied.values()),
            spoofed_packets=sum(st.live_spoofed.values()),
            setup_latency=st.counters.setup_latency.copy(),
            packet_ins_dropped=dict(st.counters.packet_ins_dropped),
        )
