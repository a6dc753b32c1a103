#!/usr/bin/env python3
"""Replicated controllers: failover time and setup rate with 1, 2 and 3 replicas.

On the namespace testbed (real OVS, controllers, agents) with a 3-member etcd
cluster on loopback:

Three hosts; the switches' masters are spread over the replicas (one each).

1. failover: the master of one switch (in turn h1, h2, h3's) is killed (SIGKILL)
   `--kills` times while a pair of h1 and h2 pings every 50 ms;
   printed: the time until every switch has a master again (median, max), the time
   until a new connection through the dead replica's switch is set up, and the
   established pings lost.  The killed replica is started again after each round and
   given its switch back.
2. setup rate: new same-host pairs per second (the hot-plug benchmark's burst) on all
   three hosts at once, with 1, 2 and 3 replicas running, each as a ratio of the
   1-replica figure measured in the same run (the median of `--rate-rounds` rounds,
   each round one burst per replica count).

Run as root:  .venv/bin/python benchmarks/failover.py [--kills 10] [--rate-containers 16]
              [--rate-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.hotplug import probe_all
from controller.datapath.state import CoreState
from tests.etcdcluster import EtcdCluster
from tests.integration.testbed import Container, Testbed


def masters(tb: Testbed, without: int | None = None, timeout: float = 15.0
            ) -> tuple[dict[str, int], float]:
    """Every switch's confirmed master (role replies), and when that was seen."""
    found = tb.wait_masters(timeout, without=without, interval=0.01)
    return found, time.monotonic()


def balanced(tb: Testbed, timeout: float = 30.0) -> dict[str, int]:
    """Until every running replica masters one switch (three hosts)."""
    holder: list[dict[str, int]] = []

    def one_each() -> bool:
        m = tb.confirmed_masters()
        running = {i for i in range(tb.replicas) if tb.replica_procs[i] is not None}
        ok = m is not None and set(m.values()) == running and len(m) == len(running)
        if ok and m is not None:
            holder.append(m)
        return ok

    tb.wait_until(one_each, timeout, "the switches are not one per replica")
    return holder[-1]


def first_reply(tb: Testbed, src: Container, dst: Container, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tb.ping(src, dst, count=1, timeout=0.5):
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"no new connection {src.name} -> {dst.name}")


def failover(tb: Testbed, kills: int) -> dict[str, object]:
    takeovers, setups, lost, sent_total = [], [], 0, 0
    for k in range(kills):
        host = f"h{k % 3 + 1}"
        other = "h2" if host == "h1" else "h1"
        # a new connection between the dead replica's switch and another one
        a, b = tb.containers[f"f{host}{k}"], tb.containers[f"f{other}{k}"]
        victim = balanced(tb)[host]
        out = tb.dir / f"ping-{k}.log"
        ping = tb.spawn(tb.containers["p1"], "ping", "-n", "-i", "0.05", "-W", "1", "-c", "120",
                        tb.containers["p2"].ip, what="ping", log=out)
        time.sleep(1.0)
        killed = time.monotonic()
        tb.kill_replica(victim, signal.SIGKILL)
        # The first new connection is tried from the kill on, while the takeover runs.
        setup = threading.Thread(target=lambda x, y, t: setups.append(first_reply(tb, x, y) - t),
                                 args=(a, b, killed))
        setup.start()
        after, seen = masters(tb, without=victim)
        takeovers.append(seen - killed)
        setup.join()
        ping.popen.wait(timeout=60)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out.read_text())
        assert m
        sent_total += int(m.group(1))
        lost += int(m.group(1)) - int(m.group(2))
        tb.start_replica(victim)
        print(f"  kill {k + 1}: replica {victim} (master of {host}) -> {after[host]}: "
              f"takeover {takeovers[-1]:.2f} s, new connection after {setups[-1]:.2f} s",
              flush=True)
    balanced(tb)
    return {
        "kills": kills,
        "takeover_median_s": round(statistics.median(takeovers), 3),
        "takeover_max_s": round(max(takeovers), 3),
        "new_connection_median_s": round(statistics.median(setups), 3),
        "new_connection_max_s": round(max(setups), 3),
        "established_pings_lost": lost,
        "established_pings_sent": sent_total,
    }


def setup_rates(tb: Testbed, n: int, rounds: int) -> dict[int, dict[str, Any]]:
    """`rounds` rounds of one burst each with 3, 2 and 1 replicas running (the stopped
    replicas start again between rounds), so drift in this machine's load falls on
    every replica count alike; the median rate of each count."""
    groups = [[tb.container(h, f"r{h}{i}", "bench") for i in range(n)] for h in tb.hosts]
    fanout = min(n - 1, CoreState().packet_in_burst // 2)
    mac = {c.ip: "02:da:00:00:00:01" for g in groups for c in g}
    runs: dict[int, list[dict[str, float]]] = {3: [], 2: [], 1: []}
    for r in range(rounds):
        for i in range(tb.replicas):
            if tb.replica_procs[i] is None:
                tb.start_replica(i)
        for running in (3, 2, 1):
            while sum(p is not None for p in tb.replica_procs) > running:
                i = max(i for i in range(tb.replicas) if tb.replica_procs[i] is not None)
                tb.kill_replica(i, signal.SIGTERM)  # it resigns: its switches move at once
            found = balanced(tb) if running == 3 else masters(tb)[0]
            tb.wait_idle(timeout=tb.idle_timeout * 4 + 10)
            runs[running].append(probe_all(tb, groups, mac, fanout))
            print(f"  round {r + 1}, {running} replica(s), masters {found}: "
                  f"{runs[running][-1]}", flush=True)
    return {
        k: {"pairs_per_s": statistics.median(x["pairs_per_s"] for x in v),
            "failed_pct": max(x["failed_pct"] for x in v),
            "runs_pairs_per_s": [x["pairs_per_s"] for x in v]}
        for k, v in runs.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rate-containers", type=int, default=16)
    ap.add_argument("--rate-rounds", type=int, default=3)
    args = ap.parse_args()
    with EtcdCluster(3) as etcd, Testbed(hosts=3, idle_timeout=3, replicas=3, tls=True,
                                         etcd_ca=etcd.ca, store=etcd.url("bench-failover")) as tb:
        tb.create_network("bench", "10.1.0.0/16")
        tb.container("h1", "p1", "bench")
        tb.container("h2", "p2", "bench")
        for k in range(args.kills):
            host = f"h{k % 3 + 1}"
            for h in {host, "h2" if host == "h1" else "h1"}:
                tb.container(h, f"f{h}{k}", "bench")
        print(f"failover over {args.kills} kills of a switch's master (SIGKILL):", flush=True)
        fo = failover(tb, args.kills)
        print(f"failover: takeover median {fo['takeover_median_s']} s, max "
              f"{fo['takeover_max_s']} s; first new connection median "
              f"{fo['new_connection_median_s']} s, max {fo['new_connection_max_s']} s after "
              f"the kill; established pings lost {fo['established_pings_lost']} of "
              f"{fo['established_pings_sent']}")
        print("setup rate on three hosts at once, with 3, 2, 1 replicas:", flush=True)
        rates = setup_rates(tb, args.rate_containers, args.rate_rounds)
        base = float(rates[1]["pairs_per_s"])
        print(f"setup rate (median of {args.rate_rounds} rounds): " + ", ".join(
            f"{n} replica(s) {rates[n]['pairs_per_s']}/s "
            f"(ratio {rates[n]['pairs_per_s'] / base:.2f}, "
            f"{rates[n]['failed_pct']:.1f}% failed)"
            for n in (1, 2, 3)))
        print(json.dumps({"failover": fo, "setup_rate": rates}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
