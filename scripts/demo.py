"""The single-site namespace demo behind ./scripts/demo.sh (see README)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.testbed import Testbed, cleanup_leftovers


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(tb: Testbed, ns: str, *cmd: str) -> None:
    print(f"$ {' '.join(cmd)}")
    res = tb.exec(ns, *cmd, timeout=30)
    print((res.stdout + res.stderr).rstrip())


def main() -> int:
    if sys.argv[1:] == ["down"]:
        removed = cleanup_leftovers()
        print(f"removed {len(removed)} leftover lab objects")
        return 0
    if os.geteuid() != 0:
        print("demo: run as root (it creates network namespaces and OVS instances)")
        return 1
    with Testbed(hosts=2, idle_timeout=10) as tb:
        step(f"controller at {tb.api_url}; hosts h1, h2 on underlay {tb.underlay}")
        tb.create_network("web", "10.1.0.0/24")
        tb.create_network("db", "172.31.7.0/24")
        a = tb.container("h1", "a", "web")
        b = tb.container("h1", "b", "web")
        c = tb.container("h2", "c", "web")
        d = tb.container("h2", "d", "db")
        for x in (a, b, c, d):
            print(f"  container {x.name}: {x.ip} on {x.host} (network {x.network})")
        step("nothing is installed before the first packet (h1, table 1)")
        for line in tb.flows("h1", table=1):
            print("  " + line)
        step("a -> b, same host: one hop")
        show(tb, a.ns, "ping", "-c", "2", b.ip)
        show(tb, a.ns, "traceroute", "-n", "-q", "1", "-w", "1", b.ip)
        step("a -> c, other host: three hops (host h1, host h2, container)")
        show(tb, a.ns, "ping", "-c", "2", c.ip)
        show(tb, a.ns, "traceroute", "-n", "-q", "1", "-w", "1", c.ip)
        step("a's neighbour table: every address is the virtual gateway")
        show(tb, a.ns, "ip", "neigh")
        step("a -> d, another network: denied")
        show(tb, a.ns, "ping", "-c", "1", "-W", "1", d.ip)
        step("live routes (GET /api/v1/routes)")
        for r in tb.routes():
            print(f"  {r['src']} -> {r['dst']}  {r['src_host']}->{r['dst_host']}  "
                  f"path={r['path']} age={r['age']}s idle={r['idle']}s")
        step("kernel routes h1 holds for its connections (proto 211)")
        for line in tb.kernel_routes("h1"):
            print("  " + line)
        step("after the idle timeout everything is gone again")
        time.sleep(tb.idle_timeout + 4)
        print(f"  routes: {tb.routes()}")
        print(f"  h1 table 1: {len(tb.flows('h1', table=1))} flow(s) (the table-miss only)")
        print(f"  h1 via routes: {tb.via_routes('h1')}")
        if sys.stdin.isatty():
            print(f"\nTry it: export DAOLINET_URL={tb.api_url} DAOLINET_TOKEN={tb.token}; "
                  f".venv/bin/daolictl route list")
            print(f"        ip netns exec {a.ns} ping {c.ip}")
            input("Press Enter to tear the lab down. ")
    print("lab removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
