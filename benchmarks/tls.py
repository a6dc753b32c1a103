#!/usr/bin/env python3
"""What TLS costs: the hot-plug benchmark's first-packet overhead and setup rate
(benchmarks/hotplug.py) with TLS on against plaintext, in one run, interleaved.

Two namespace testbeds run side by side: one with `tls=True` (the switches connect
over TLS with their host's certificate and the controller requires it; tests/pki.py)
and one without.  Each round measures both, in alternating order (plain then TLS,
then TLS then plain...), on new containers: the first-packet overhead over N*N fresh
cross-host pairs, then the setup rate of M new containers on one host.  So the
machine's noise falls on both alike.  Prints the medians per mode and the median of
the rounds' differences, against the bounds of the issue (TLS: at most 10 % of the
setup rate and 0.3 ms of the median first packet).

Run as root:  .venv/bin/python benchmarks/tls.py [--rounds 4] [--pairs-side 5]
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


def measure(tb: Testbed, tag: str, args: argparse.Namespace) -> dict[str, float]:
    fp = first_packet(tb, args.pairs_side, tag)
    rate = daolinet_rate(tb, args.rate_containers, tag)
    return {"overhead_median_ms": fp["overhead_median_ms"],
            "overhead_p99_ms": fp["overhead_p99_ms"],
            "steady_rtt_median_ms": fp["steady_rtt_median_ms"],
            "first_packet_lost": fp["first_packet_lost"],
            "pairs_per_s": rate["pairs_per_s"], "failed_pct": rate["failed_pct"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pairs-side", type=int, default=5, help="N: N*N cross-host pairs")
    ap.add_argument("--rate-containers", type=int, default=12)
    ap.add_argument("--idle-timeout", type=int, default=5)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with Testbed(hosts=2, idle_timeout=args.idle_timeout) as plain, \
            Testbed(hosts=2, idle_timeout=args.idle_timeout, tls=True) as tls:
        beds = {"plain": plain, "tls": tls}
        assert plain.openflow_target(0).startswith("tcp:")
        assert tls.openflow_target(0).startswith("ssl:")
        for tb in beds.values():
            tb.create_network("bench", "10.1.0.0/24")
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                result = measure(beds[mode], f"x{r}", args)
                runs[mode].append(result)
                print(f"round {r + 1} {mode}: {json.dumps(result)}", flush=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    def diff(key: str) -> float:
        return statistics.median(t[key] - p[key] for t, p in zip(runs["tls"], runs["plain"],
                                                                 strict=True))

    for mode in MODES:
        print(f"{mode}: first-packet overhead median {med(mode, 'overhead_median_ms'):.3f} ms "
              f"(p99 {med(mode, 'overhead_p99_ms'):.2f} ms, steady RTT "
              f"{med(mode, 'steady_rtt_median_ms'):.3f} ms), setup rate "
              f"{med(mode, 'pairs_per_s'):.0f} pairs/s")
    ratio = med("tls", "pairs_per_s") / med("plain", "pairs_per_s")
    print(f"TLS - plain, median of the rounds' differences: first packet "
          f"{diff('overhead_median_ms'):+.3f} ms (bound +0.3 ms), setup rate "
          f"{diff('pairs_per_s'):+.0f} pairs/s; ratio of the medians x{ratio:.2f} "
          f"(bound x0.90)")
    print(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
