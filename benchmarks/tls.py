#!/usr/bin/env python3
"""What TLS costs: the hot-plug benchmark's first-packet overhead and setup rate
(benchmarks/hotplug.py) with TLS on against plaintext, in one run, interleaved.

Each round builds two namespace testbeds one after the other, in alternating order
(plain, TLS, then TLS, plain...): one with `tls=True` (the switches connect over TLS
with their host's certificate, the controller requires it; see tests/pki.py), one
without.  Per testbed: the first-packet overhead over N*N fresh cross-host pairs and
the setup rate of M containers on one host.  Prints the median of the rounds per
mode and the differences the issue bounds (TLS: at most 10 % of the setup rate and
0.3 ms of the median first packet).

Run as root:  .venv/bin/python benchmarks/tls.py [--rounds 2] [--pairs-side 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hotplug import daolinet_rate, first_packet
from tests.integration.testbed import Testbed

MODES = ("plain", "tls")


def one(mode: str, args: argparse.Namespace) -> dict[str, float]:
    with Testbed(hosts=2, idle_timeout=args.idle_timeout, tls=mode == "tls") as tb:
        assert tb.openflow_target(0).startswith("ssl:" if mode == "tls" else "tcp:")
        tb.create_network("bench", "10.1.0.0/24")
        fp = first_packet(tb, args.pairs_side)
        rate = daolinet_rate(tb, args.rate_containers)
    return {"overhead_median_ms": fp["overhead_median_ms"],
            "overhead_p99_ms": fp["overhead_p99_ms"],
            "steady_rtt_median_ms": fp["steady_rtt_median_ms"],
            "first_packet_lost": fp["first_packet_lost"],
            "pairs_per_s": rate["pairs_per_s"], "failed_pct": rate["failed_pct"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pairs-side", type=int, default=6, help="N: N*N cross-host pairs")
    ap.add_argument("--rate-containers", type=int, default=16)
    ap.add_argument("--idle-timeout", type=int, default=5)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            result = one(mode, args)
            runs[mode].append(result)
            print(f"round {r + 1} {mode}: {json.dumps(result)}", flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    for mode in MODES:
        print(f"{mode}: first-packet overhead median {med(mode, 'overhead_median_ms'):.3f} ms "
              f"(p99 {med(mode, 'overhead_p99_ms'):.2f} ms, steady RTT "
              f"{med(mode, 'steady_rtt_median_ms'):.3f} ms), setup rate "
              f"{med(mode, 'pairs_per_s'):.0f} pairs/s")
    extra = med("tls", "overhead_median_ms") - med("plain", "overhead_median_ms")
    ratio = med("tls", "pairs_per_s") / med("plain", "pairs_per_s")
    print(f"TLS - plain: first packet {extra:+.3f} ms (bound +0.3 ms), setup rate x{ratio:.2f} "
          f"(bound x0.90)")
    print(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
