"""benchmarks/scale.py still runs: a small run (--quick) gives sane figures.

Not timed: it checks that the simulated switches and agents complete setups with
the real controller and the baseline, and that the last line carries every figure.
It needs no root (loopback only), but it starts the benchmark's processes and runs
for about half a minute, so it lives with the integration tests: the unit layer
stays at pure logic and runs in seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("hosts", "containers", "setups_per_s", "baseline_per_s", "p50_ms", "p99_ms",
        "rss_mb", "cold_start_s", "resync_s", "idle_cpu_pct", "store_mb", "register_s",
        "series", "controller_setups", "sim_capacity_per_s")


def test_a_quick_scale_run_sets_up_connections_and_reports_every_figure() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert [k for k in KEYS if k not in figures] == []
    assert (figures["hosts"], figures["containers"]) == (4, 80)
    assert figures["setups_per_s"] > 0
    assert figures["baseline_per_s"] > 0
    assert sum(figures["series"]) > 0
    # the controller's own counter saw at least the setups the switches saw complete
    assert figures["controller_setups"] >= sum(figures["series"])
    assert figures["denied"] == 0  # the workload only picks allowed pairs
    # a setup is lost after 5 s without its flows: rare on a busy machine, never many
    assert figures["lost"] <= max(2, sum(figures["series"]) // 20)
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["rss_mb"] > 10 and figures["store_mb"] > 0
    assert 0 < figures["cold_start_s"] < 120
    assert not math.isnan(figures["resync_s"]) and figures["resync_s"] > 0
