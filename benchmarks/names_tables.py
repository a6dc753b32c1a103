#!/usr/bin/env python3
"""Names tables at scale: the incremental tables (controller/agents/names_cache.py)
against the full computation they replace (docs/performance.md, "Names tables").

The desired state: `--hosts` hosts, `--containers` containers spread over them, in
networks of `--per-network` containers (a network spans many hosts).  Per change the
controller used to compute every connected host's table in full (`host_names` for
each host: local containers x all containers decisions); the cache decides again
only the pairs the change can move.  Both are measured with `--sample` hosts
connected and scaled to all hosts (both costs are linear in the connected hosts:
the full one per host, the incremental one per cached row), in CPU time, on:

* a container start (EndpointAdded: its row once, one entry in every row) and its
  stop (EndpointRemoved);
* a pair policy (PairPolicyChanged);
* a network's firewall rule (RulesChanged: every pair into that network).

No root, no network.  Run:  .venv/bin/python benchmarks/names_tables.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.agents.names import host_names
from controller.agents.names_cache import NamesCache
from controller.desired.events import Change
from controller.desired.index import DesiredIndex
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of `fn` (the machine is shared: wall time would measure the others)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--containers", type=int, default=10000)
    ap.add_argument("--per-network", type=int, default=100)
    ap.add_argument("--sample", type=int, default=10, help="hosts connected (measured)")
    args = ap.parse_args()

    changes: list[Change] = []
    index = DesiredIndex()
    inv = Inventory(SqliteStore(":memory:"), changes.append, index=index)
    t0 = time.perf_counter()
    hosts = [inv.register_host(f"h{i}", f"198.18.{i // 250}.{i % 250 + 1}").name
             for i in range(args.hosts)]
    networks = [f"n{i}" for i in range(-(-args.containers // args.per_network))]
    for i, net in enumerate(networks):
        inv.create_network(net, f"10.{i // 256}.{i % 256}.0/24")
    for i in range(args.containers):
        inv.add_endpoint(f"c{i}", networks[i // args.per_network], hosts[i % args.hosts])
    print(f"state: {args.hosts} hosts, {args.containers} containers, {len(networks)} "
          f"networks, built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    sample = hosts[:: max(1, args.hosts // args.sample)][: args.sample]
    scale = args.hosts / len(sample)
    cache = NamesCache()
    prime = timed(lambda: [cache.table(index.view(), h) for h in sample])

    def full() -> None:
        view = index.view()
        for h in sample:
            host_names(view, h)

    def incremental() -> None:
        view = index.view()
        for change in changes:
            for h in cache.apply(view, change) & set(sample):
                cache.table(view, h)

    # The new container runs on a host outside the sample, so its own row (computed
    # once, on its host, not per host) is not scaled with the others: it is timed
    # apart (`row_ms`) and added once.
    elsewhere = next(h for h in hosts if h not in sample)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("start", lambda: inv.add_endpoint("new", networks[0], elsewhere)),
        ("stop", lambda: inv.remove_endpoint("new")),
        ("pair", lambda: inv.set_pair_policy("c0", "c1", "deny")),
        ("rule", lambda: inv.add_rule("network", networks[0], "deny", "network",
                                      networks[1 % len(networks)], "tcp", ["22"])),
    ]
    figures: dict[str, object] = {"hosts": args.hosts, "containers": args.containers,
                                  "sample_hosts": len(sample),
                                  "prime_per_host_ms": round(prime / len(sample) * 1000, 1)}
    host_row = timed(lambda: host_names(index.view(), elsewhere))
    row = host_row / max(1, len(index.view().endpoints(host=elsewhere)))
    figures["row_ms"] = round(row * 1000, 1)
    for name, step in steps:
        changes.clear()
        step()
        inc = timed(incremental) * scale + (row if name == "start" else 0.0)
        base = timed(full) * scale
        figures[f"{name}_incremental_ms"] = round(inc * 1000, 1)
        figures[f"{name}_full_ms"] = round(base * 1000, 1)
        print(f"{name:>6}: incremental {inc * 1000:10.1f} ms   full (baseline) "
              f"{base * 1000:10.1f} ms   x{base / max(inc, 1e-9):.0f}", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
