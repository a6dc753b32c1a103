"""GET /metrics: controller counters in the Prometheus text format.

Totals keep plain names (`daolinet_packet_ins_total`); per-host series are
`daolinet_host_*{host="h1"}`, so summing a metric never counts twice.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from controller.api.auth import RequireCredentialUnderTls
from controller.api.deps import Ctx, RuntimeView
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.datapath.state import (
    DROP_SWITCH_BUDGET,
    DROP_UNKNOWN_PORT,
    SETUP_BUCKETS,
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


def _header(name: str, kind: str, help_: str) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]


def _histogram(name: str, labels: str, hist: LatencyHistogram) -> list[str]:
    """Cumulative bucket, sum and count lines of every setup since the start;
    `labels` is "" or 'host="h1",'."""
    cumulative = hist.cumulative()
    lines = [f'{name}_bucket{{{labels}le="{bound}"}} {n}'
             for bound, n in zip(SETUP_BUCKETS, cumulative, strict=False)]
    lines.append(f'{name}_bucket{{{labels}le="+Inf"}} {cumulative[-1]}')
    tail = f"{{{labels.rstrip(',')}}}" if labels else ""
    lines.append(f"{name}_sum{tail} {hist.total:.6f}")
    lines.append(f"{name}_count{tail} {cumulative[-1]}")
    return lines


def _dropped(name: str, labels: str, dropped: dict[str, int]) -> list[str]:
    """One line per reason (every reason, 0 when none); `labels` is "" or 'host="h1",'."""
    return [f'{name}{{{labels}reason="{reason}"}} {dropped.get(reason, 0)}'
            for reason in DROP_REASONS]


def render(
    runtime: RuntimeView, roles: Roles, leader: bool,
    switch_refusals: Mapping[str, int] | None = None,
    connlog: ConnectionLog | None = None,
) -> str:
    """`leader`: whether this replica leads (ApiContext.leads); `switch_refusals`:
    switch connections this replica refused, by reason; `connlog`: the connection
    log (its size and the lines its file lost)."""
    totals, live = runtime.counters()
    per_host = runtime.host_counters()
    lines: list[str] = []
    for name, help_ in COUNTERS:
        metric = f"daolinet_{name}_total"
        lines += _header(metric, "counter", help_)
        lines.append(f"{metric} {getattr(totals, name)}")
    lines += _header("daolinet_packet_ins_dropped_total", "counter",
                     "PacketIns dropped before any decision, by reason (switch_budget: over "
                     "its switch's budget; unknown_port: from a port that is no endpoint)")
    lines += _dropped("daolinet_packet_ins_dropped_total", "", totals.packet_ins_dropped)
    lines += _header("daolinet_replica_leader", "gauge",
                     "1 while this controller replica leads (with masters spread over "
                     "replicas: assigns the switches; else: masters them all)")
    lines.append(f"daolinet_replica_leader {int(leader)}")
    lines += _header("daolinet_switches_mastered", "gauge",
                     "switches whose role reply says this replica is their master")
    lines.append(f"daolinet_switches_mastered {len(roles.mastered)}")
    lines += _header("daolinet_switch_mastered", "gauge",
                     "1 for each switch (by dpid) whose role reply says this replica is master")
    lines += [f'daolinet_switch_mastered{{dpid="{d}"}} 1' for d in sorted(roles.mastered)]
    lines += _header("daolinet_switches_connected", "gauge",
                     "switches with an OpenFlow connection to this replica, master or slave")
    lines.append(f"daolinet_switches_connected {len(roles.connected)}")
    lines += _header("daolinet_openflow_refused_total", "counter",
                     "messages a switch refused: role requests (a newer generation leads it) "
                     "and writes as from a slave")
    lines += [f'daolinet_openflow_refused_total{{kind="{k}"}} {n}'
              for k, n in sorted(roles.refusals.items())]
    lines += _header("daolinet_switch_connections_refused_total", "counter",
                     "switch connections this replica refused: TLS handshake failed, "
                     "certificate not a registered host's, datapath id of another host, "
                     "certificate revoked")
    lines += [f'daolinet_switch_connections_refused_total{{reason="{k}"}} {n}'
              for k, n in sorted((switch_refusals or {}).items())]
    lines += _header("daolinet_live_routes", "gauge", "connections with installed flows")
    lines.append(f"daolinet_live_routes {live}")
    lines += _header("daolinet_setup_seconds", "histogram",
                     "PacketIn to flows installed (every setup since the start)")
    lines += _histogram("daolinet_setup_seconds", "", totals.setup_latency)
    if connlog is not None:
        # docs/architecture.md, "Connection log"
        lines += _header("daolinet_connection_log_entries", "gauge",
                         "entries the connection log holds")
        lines.append(f"daolinet_connection_log_entries {len(connlog)}")
        lines += _header("daolinet_connection_log_lines_dropped_total", "counter",
                         "connection log lines its file lost (the writer could not keep up)")
        lines.append(f"daolinet_connection_log_lines_dropped_total {connlog.write_dropped}")
    for name, help_ in COUNTERS:
        metric = f"daolinet_host_{name}_total"
        lines += _header(metric, "counter", f"{help_}, per host")
        lines += [f'{metric}{{host="{h}"}} {getattr(hc, name)}' for h, (hc, _) in per_host.items()]
    lines += _header("daolinet_host_packet_ins_dropped_total", "counter",
                     "PacketIns dropped before any decision, by reason, per host")
    for h, (hc, _) in per_host.items():
        lines += _dropped("daolinet_host_packet_ins_dropped_total", f'host="{h}",',
                          hc.packet_ins_dropped)
    lines += _header("daolinet_host_live_routes", "gauge",
                     "connections with installed flows, per host")
    lines += [f'daolinet_host_live_routes{{host="{h}"}} {n}' for h, (_, n) in per_host.items()]
    lines += _header("daolinet_host_setup_seconds", "histogram",
                     "PacketIn to flows installed, per host")
    for h, (hc, _) in per_host.items():
        lines += _histogram("daolinet_host_setup_seconds", f'host="{h}",', hc.setup_latency)
    return "\n".join(lines) + "\n"


# Under TLS a credential (docs/security.md, "Endpoints and tokens"): the figures name
# every host and how busy it is.
@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False,
            dependencies=[RequireCredentialUnderTls])
def metrics(ctx: Ctx) -> str:
    return render(ctx.runtime, ctx.roles, ctx.leads(), ctx.switch_refusals(), ctx.connlog)
