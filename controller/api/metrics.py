"""GET /metrics: the controller's metrics, rendered by prometheus_client
(docs/architecture.md, "Metrics").

Totals keep plain names (`daolinet_packet_ins_total`); per-host series are
`daolinet_host_*{host="h1"}`, so summing a metric never counts twice.  The values
live in the core (controller/datapath/state.py) and the roles; a collector reads
them at each scrape, so nothing is counted twice and the hot path stays plain ints.

Bounds: per-host and per-switch series exist for the first `max_hosts` hosts by
name (ApiContext.metrics_hosts, `--metrics-hosts`); `daolinet_hosts_unlabelled` says
how many hosts have none.  Every other label takes values from a fixed set (drop
reasons, refusal kinds, log events and verdicts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from controller.api.auth import RequireCredentialUnderTls
from controller.api.counterfloor import CounterFloor
from controller.api.deps import DEFAULT_METRICS_HOSTS, Ctx, RuntimeView
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.datapath.state import (
    DROP_SWITCH_BUDGET,
    DROP_UNKNOWN_PORT,
    SETUP_BUCKETS,
    Counters,
    LatencyHistogram,
)

router = APIRouter()

DROP_REASONS = (DROP_SWITCH_BUDGET, DROP_UNKNOWN_PORT)

COUNTERS = (
    ("packet_ins", "PacketIn messages handled"),
    ("setups", "connections set up (flows installed)"),
    ("denials", "first packets denied (drop flow installed)"),
    ("failed_setups", "setups that failed (agent or switch missing)"),
    ("denied_packets", "packets dropped by deny flows"),
    ("spoofed_packets", "packets dropped at a container port for a source not its own"),
)


@dataclass
class _Counter:
    """One counter family being built: its series by label values."""

    name: str
    help: str
    labels: Sequence[str] = ()
    series: dict[tuple[str, ...], float] = field(default_factory=dict)


def _buckets(hist: LatencyHistogram) -> list[tuple[str, float]]:
    """Cumulative buckets of every setup since the start, +Inf last."""
    cumulative = hist.cumulative()
    bounds = [str(b) for b in SETUP_BUCKETS] + ["+Inf"]
    return list(zip(bounds, map(float, cumulative), strict=True))


class ControllerCollector(Collector):
    """The controller's metrics at the time of the scrape.  `leader`: whether this
    replica leads; `switch_refusals`: switch connections refused, by reason;
    `connlog`: the connection log (None: off); `floor`: the counters' last values
    (kept across scrapes by the caller); `max_hosts`: the hosts with series of their
    own, at most."""

    def __init__(
        self,
        runtime: RuntimeView,
        roles: Roles,
        leader: bool,
        *,
        floor: CounterFloor,
        switch_refusals: Mapping[str, int] | None = None,
        connlog: ConnectionLog | None = None,
        max_hosts: int = DEFAULT_METRICS_HOSTS,
    ) -> None:
        self.runtime = runtime
        self.roles = roles
        self.leader = leader
        self.floor = floor
        self.switch_refusals = switch_refusals or {}
        self.connlog = connlog
        self.max_hosts = max_hosts

    def collect(self) -> Iterator[Metric]:
        totals, live = self.runtime.counters()
        every_host = self.runtime.host_counters()
        hosts = dict(list(every_host.items())[: self.max_hosts])  # sorted by name
        yield from self._counters(totals, hosts)
        yield from self._gauges(live, hosts, len(every_host) - len(hosts))
        setup = HistogramMetricFamily(
            "daolinet_setup_seconds", "PacketIn to flows installed (every setup since the start)",
            buckets=_buckets(totals.setup_latency), sum_value=totals.setup_latency.total)
        yield setup
        per_host = HistogramMetricFamily(
            "daolinet_host_setup_seconds", "PacketIn to flows installed, per host",
            labels=["host"])
        for h, (hc, _) in hosts.items():
            per_host.add_metric([h], _buckets(hc.setup_latency), hc.setup_latency.total)
        yield per_host

    def _counters(
        self, totals: Counters, hosts: Mapping[str, tuple[Counters, int]]
    ) -> Iterator[Metric]:
        families: list[_Counter] = []
        for name, help_ in COUNTERS:
            families.append(_Counter(f"daolinet_{name}", help_,
                                     series={(): float(getattr(totals, name))}))
            families.append(_Counter(
                f"daolinet_host_{name}", f"{help_}, per host", ("host",),
                {(h,): float(getattr(hc, name)) for h, (hc, _) in hosts.items()}))
        families.append(_Counter(
            "daolinet_packet_ins_dropped",
            "PacketIns dropped before any decision, by reason (switch_budget: over its "
            "switch's budget; unknown_port: from a port that is no endpoint)", ("reason",),
            {(r,): float(totals.packet_ins_dropped.get(r, 0)) for r in DROP_REASONS}))
        families.append(_Counter(
            "daolinet_host_packet_ins_dropped",
            "PacketIns dropped before any decision, by reason, per host", ("host", "reason"),
            {(h, r): float(hc.packet_ins_dropped.get(r, 0))
             for h, (hc, _) in hosts.items() for r in DROP_REASONS}))
        families.append(_Counter(
            "daolinet_openflow_refused",
            "messages a switch refused: role requests (a newer generation leads it) and "
            "writes as from a slave", ("kind",),
            {(k,): float(n) for k, n in sorted(self.roles.refusals.items())}))
        families.append(_Counter(
            "daolinet_switch_connections_refused",
            "switch connections this replica refused: TLS handshake failed, certificate "
            "not a registered host's, datapath id of another host, certificate revoked",
            ("reason",),
            {(k,): float(n) for k, n in sorted(self.switch_refusals.items())}))
        if self.connlog is not None:
            # docs/architecture.md, "Connection log"
            families.append(_Counter(
                "daolinet_connection_log_lines_dropped",
                "connection log lines its file lost (the writer could not keep up)",
                series={(): float(self.connlog.write_dropped)}))
            families.append(_Counter(
                "daolinet_connection_log_events",
                "decisions the connection log recorded, by event (allowed, denied, "
                "revoked, expired...) and verdict; a denied flood counts once per "
                "summary entry", ("event", "verdict"),
                {key: float(n) for key, n in sorted(self.connlog.recorded().items())}))
        values = self.floor.scrape({
            (f.name, key): value for f in families for key, value in f.series.items()})
        for f in families:
            metric = CounterMetricFamily(f"{f.name}_total", f.help, labels=list(f.labels))
            for key in f.series:
                metric.add_metric(list(key), values[f.name, key])
            yield metric

    def _gauges(
        self, live: int, hosts: Mapping[str, tuple[Counters, int]], unlabelled: int
    ) -> Iterator[Metric]:
        roles = self.roles
        yield GaugeMetricFamily(
            "daolinet_replica_leader", "1 while this controller replica leads (with masters "
            "spread over replicas: assigns the switches; else: masters them all)",
            value=int(self.leader))
        yield GaugeMetricFamily(
            "daolinet_switches_mastered",
            "switches whose role reply says this replica is their master",
            value=len(roles.mastered))
        mastered = GaugeMetricFamily(
            "daolinet_switch_mastered",
            "1 for each switch (by dpid) whose role reply says this replica is master "
            "(the first --metrics-hosts switches by dpid)", labels=["dpid"])
        for dpid in sorted(roles.mastered)[: self.max_hosts]:
            mastered.add_metric([str(dpid)], 1)
        yield mastered
        yield GaugeMetricFamily(
            "daolinet_switches_connected",
            "switches with an OpenFlow connection to this replica, master or slave",
            value=len(roles.connected_now()))
        yield GaugeMetricFamily("daolinet_live_routes", "connections with installed flows",
                                value=live)
        per_host = GaugeMetricFamily("daolinet_host_live_routes",
                                     "connections with installed flows, per host",
                                     labels=["host"])
        for h, (_, n) in hosts.items():
            per_host.add_metric([h], n)
        yield per_host
        yield GaugeMetricFamily(
            "daolinet_hosts_unlabelled",
            "hosts past --metrics-hosts (by name): counted in the totals, without "
            "per-host series", value=unlabelled)
        if self.connlog is not None:
            yield GaugeMetricFamily("daolinet_connection_log_entries",
                                    "entries the connection log holds", value=len(self.connlog))


def render(collector: ControllerCollector) -> bytes:
    """The Prometheus text format of one scrape of `collector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


# Under TLS a credential (docs/security.md, "Endpoints and tokens"): the figures name
# every host and how busy it is.
@router.get("/metrics", include_in_schema=False, dependencies=[RequireCredentialUnderTls])
def metrics(ctx: Ctx) -> Response:
    collector = ControllerCollector(
        ctx.runtime, ctx.roles, ctx.leads(), floor=ctx.metrics_floor,
        switch_refusals=ctx.switch_refusals(), connlog=ctx.connlog,
        max_hosts=ctx.metrics_hosts)
    return Response(render(collector), media_type=CONTENT_TYPE_LATEST)
