"""GET /metrics with per-host series: the totals of controller/api/metrics.py plus the
same counters labelled by host, and the drop counters of policy enforcement.

Totals keep their names (`daolinet_packet_ins_total`); per-host series are
`daolinet_host_*{host="h1"}`, so summing a metric never counts twice.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from controller.api.metrics import BUCKETS
from controller.api.metrics import metrics as totals
from controller.fabric import Fabric

router = APIRouter()

COUNTERS = (
    ("packet_ins", "PacketIn messages handled"),
    ("setups", "connections set up (flows installed)"),
    ("denials", "first packets denied (drop flow installed)"),
    ("failed_setups", "setups that failed (agent or switch missing)"),
    ("denied_packets", "packets dropped by deny flows"),
    ("spoofed_packets", "packets dropped at a container port for a source not its own"),
)


def render(fabric: Fabric) -> str:
    c, _, _ = fabric.counters()
    per_host = fabric.host_counters()
    lines: list[str] = []
    for name, help_ in COUNTERS[4:]:
        lines += [f"# HELP daolinet_{name}_total {help_}", f"# TYPE daolinet_{name}_total counter",
                  f"daolinet_{name}_total {getattr(c, name)}"]
    for name, help_ in COUNTERS:
        lines += [f"# HELP daolinet_host_{name}_total {help_}, per host",
                  f"# TYPE daolinet_host_{name}_total counter"]
        lines += [f'daolinet_host_{name}_total{{host="{h}"}} {getattr(hc, name)}'
                  for h, (hc, _) in per_host.items()]
    lines += ["# HELP daolinet_host_live_routes connections with installed flows, per host",
              "# TYPE daolinet_host_live_routes gauge"]
    lines += [f'daolinet_host_live_routes{{host="{h}"}} {live}'
              for h, (_, live) in per_host.items()]
    lines += ["# HELP daolinet_host_setup_seconds PacketIn to flows installed, per host",
              "# TYPE daolinet_host_setup_seconds histogram"]
    for h, (hc, _) in per_host.items():
        lat = hc.setup_latency
        for bound in BUCKETS:
            count = sum(1 for x in lat if x <= bound)
            lines.append(f'daolinet_host_setup_seconds_bucket{{host="{h}",le="{bound}"}} {count}')
        lines.append(f'daolinet_host_setup_seconds_bucket{{host="{h}",le="+Inf"}} {len(lat)}')
        lines.append(f'daolinet_host_setup_seconds_sum{{host="{h}"}} {sum(lat):.6f}')
        lines.append(f'daolinet_host_setup_seconds_count{{host="{h}"}} {len(lat)}')
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(request: Request) -> str:
    return totals(request) + render(request.app.state.ctx.fabric)
