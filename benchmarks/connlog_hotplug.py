#!/usr/bin/env python3
"""The setup rate of benchmarks/hotplug.py with the connection log off and on, in
the same run (issue 21): real OVS, the real controller and agents on the namespace
testbed.

Each variant gets testbeds of its own (the controller's options differ: `off` is
`--connection-log-entries 0`, `on` the default log with its JSON-lines file), in
the order off, on, on, off so a drift of the shared machine favours neither; on
each, `--rounds` rounds of `--rate-containers` new containers each probing new
peers at once (hotplug.py's `daolinet_rate`).  The figure is the ratio of the
median rates, on / off.

Run as root:  .venv/bin/python benchmarks/connlog_hotplug.py [--rounds 3] [--rate-containers 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hotplug import daolinet_rate

from tests.integration.testbed import Testbed

ORDER = ("off", "on", "on", "off")


def rates(variant: str, rounds: int, containers: int, tmp: Path, bed: int) -> list[float]:
    args = (["--connection-log-entries", "0"] if variant == "off"
            else ["--connection-log-file", str(tmp / f"connections-{bed}.jsonl")])
    out = []
    with Testbed(hosts=2, idle_timeout=5, controller_args=args) as tb:
        tb.create_network("bench", "10.1.0.0/24")
        for r in range(rounds):
            got = daolinet_rate(tb, containers, tag=f"{bed}x{r}")
            out.append(got["pairs_per_s"])
            print(f"testbed {bed} ({variant}) round {r + 1}: {got['pairs_per_s']} pairs/s, "
                  f"{got['failed_pct']:.1f} % failed", flush=True)
        if variant == "on":
            entries = tb.api_json("GET", "/connections?event=allowed&limit=1000")["entries"]
            print(f"testbed {bed}: {len(entries)} allowed entries in the log", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate-containers", type=int, default=32)
    args = ap.parse_args()
    got: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for bed, variant in enumerate(ORDER):
            got[variant] += rates(variant, args.rounds, args.rate_containers, Path(tmp), bed)
    med = {v: statistics.median(x) for v, x in got.items()}
    print(f"setup rate, median pairs/s: log off {med['off']:.0f}, log on {med['on']:.0f}; "
          f"ratio {med['on'] / med['off']:.2f}")
    print(json.dumps({"rates": got, "ratio": round(med["on"] / med["off"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
