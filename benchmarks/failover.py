#!/usr/bin/env python3
"""Replicated controllers: failover time and setup rate with 1, 2 and 3 replicas.

On the namespace testbed (real OVS, controllers, agents) with a 3-member etcd
cluster on loopback:

1. failover: the leader is killed (SIGKILL) `--kills` times while a pair pings every
   50 ms; printed: the time until every switch has a new master (median, max), the
   time until a new connection is set up through it, and the established pings lost.
   The killed replica is started again after each round.
2. setup rate: new same-host pairs per second (the hot-plug benchmark's burst) with
   1, 2 and 3 replicas running, each as a ratio of the 1-replica figure measured in
   the same run.

Run as root:  .venv/bin/python benchmarks/failover.py [--kills 10] [--rate-containers 16]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.hotplug import probe_all
from controller.corestate import CoreState
from tests.etcdcluster import EtcdCluster
from tests.integration.testbed import Container, Testbed


def leader(tb: Testbed, timeout: float = 15.0, other_than: int | None = None
           ) -> tuple[int, float]:
    """The replica every switch confirmed as master (role replies), and when."""
    found = tb.wait_leader(timeout, other_than=other_than, confirmed=True, interval=0.01)
    return found, time.monotonic()


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
        a, b = tb.containers[f"fa{k}"], tb.containers[f"fb{k}"]
        old, _ = leader(tb)
        out = tb.dir / f"ping-{k}.log"
        ping = tb.spawn(tb.containers["p1"], "ping", "-n", "-i", "0.05", "-W", "1", "-c", "120",
                        tb.containers["p2"].ip, what="ping", log=out)
        time.sleep(1.0)
        killed = time.monotonic()
        tb.kill_replica(old, signal.SIGKILL)
        # The first new connection is tried from the kill on, while the takeover runs.
        setup = threading.Thread(target=lambda x, y, t: setups.append(first_reply(tb, x, y) - t),
                                 args=(a, b, killed))
        setup.start()
        new, seen = leader(tb, other_than=old)
        takeovers.append(seen - killed)
        setup.join()
        ping.popen.wait(timeout=60)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out.read_text())
        assert m
        sent_total += int(m.group(1))
        lost += int(m.group(1)) - int(m.group(2))
        tb.start_replica(old)
        tb.wait_until(lambda: all(len(tb.controller_roles(h)) == tb.replicas for h in tb.hosts),
                      20, "the restarted replica did not reconnect")
        print(f"  kill {k + 1}: replica {old} -> {new}: takeover {takeovers[-1]:.2f} s, "
              f"new connection after {setups[-1]:.2f} s", flush=True)
    return {
        "kills": kills,
        "takeover_median_s": round(statistics.median(takeovers), 3),
        "takeover_max_s": round(max(takeovers), 3),
        "new_connection_median_s": round(statistics.median(setups), 3),
        "new_connection_max_s": round(max(setups), 3),
        "established_pings_lost": lost,
        "established_pings_sent": sent_total,
    }


def setup_rates(tb: Testbed, n: int) -> dict[int, dict[str, float]]:
    cs = [tb.container("h1", f"r{i}", "bench") for i in range(n)]
    fanout = min(n - 1, CoreState().packet_in_burst // 2)
    mac = {c.ip: "02:da:00:00:00:01" for c in cs}
    rates: dict[int, dict[str, float]] = {}
    for running in (3, 2, 1):
        lead, _ = leader(tb)
        for i in range(tb.replicas):
            alive = sum(p is not None for p in tb.replica_procs)
            if alive > running and i != lead and tb.replica_procs[i] is not None:
                tb.kill_replica(i, signal.SIGTERM)
        tb.wait_idle(timeout=tb.idle_timeout * 4 + 10)
        rates[running] = probe_all(tb, cs, mac, fanout)
        print(f"  {running} replica(s): {rates[running]}", flush=True)
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rate-containers", type=int, default=16)
    args = ap.parse_args()
    with EtcdCluster(3) as etcd, Testbed(hosts=2, idle_timeout=3, replicas=3,
                                         store=etcd.url("bench-failover")) as tb:
        tb.create_network("bench", "10.1.0.0/16")
        tb.container("h1", "p1", "bench")
        tb.container("h2", "p2", "bench")
        for k in range(args.kills):
            tb.container("h1", f"fa{k}", "bench")
            tb.container("h2", f"fb{k}", "bench")
        print(f"failover over {args.kills} kills of the leader (SIGKILL):", flush=True)
        fo = failover(tb, args.kills)
        print(f"failover: takeover median {fo['takeover_median_s']} s, max "
              f"{fo['takeover_max_s']} s; first new connection median "
              f"{fo['new_connection_median_s']} s, max {fo['new_connection_max_s']} s after "
              f"the kill; established pings lost {fo['established_pings_lost']} of "
              f"{fo['established_pings_sent']}")
        print("setup rate with 3, 2, 1 replicas:", flush=True)
        rates = setup_rates(tb, args.rate_containers)
        base = rates[1]["pairs_per_s"]
        print("setup rate: " + ", ".join(
            f"{n} replica(s) {rates[n]['pairs_per_s']}/s "
            f"(ratio {rates[n]['pairs_per_s'] / base:.2f}, {rates[n]['failed_pct']:.1f}% failed)"
            for n in (1, 2, 3)))
        print(json.dumps({"failover": fo, "setup_rate": rates}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
