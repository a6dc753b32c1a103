"""GET /metrics: controller counters in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

router = APIRouter()

# Upper bounds (seconds) of the setup-latency histogram buckets.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(request: Request) -> str:
    fabric = request.app.state.ctx.fabric
    c, live, latencies = fabric.counters()
    lines = []
    for name, value, help_ in (
        ("packet_ins", c.packet_ins, "PacketIn messages handled"),
        ("setups", c.setups, "connections set up (flows installed)"),
        ("denials", c.denials, "first packets denied (drop flow installed)"),
        ("failed_setups", c.failed_setups, "setups that failed (agent or switch missing)"),
    ):
        lines += [f"# HELP daolinet_{name}_total {help_}", f"# TYPE daolinet_{name}_total counter",
                  f"daolinet_{name}_total {value}"]
    lines += ["# HELP daolinet_live_routes connections with installed flows",
              "# TYPE daolinet_live_routes gauge", f"daolinet_live_routes {live}"]
    lines += ["# HELP daolinet_setup_seconds PacketIn to flows installed (last 1000 setups)",
              "# TYPE daolinet_setup_seconds histogram"]
    for bound in BUCKETS:
        count = sum(1 for x in latencies if x <= bound)
        lines.append(f'daolinet_setup_seconds_bucket{{le="{bound}"}} {count}')
    lines.append(f'daolinet_setup_seconds_bucket{{le="+Inf"}} {len(latencies)}')
    lines.append(f"daolinet_setup_seconds_sum {sum(latencies):.6f}")
    lines.append(f"daolinet_setup_seconds_count {len(latencies)}")
    return "\n".join(lines) + "\n"
