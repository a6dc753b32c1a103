#!/usr/bin/env python3
"""Names benchmark on the namespace testbed with two real dockerd (docs/performance.md).

Prints two figures:

1. name-resolution latency (median, p99) of a daolinet name, a container on the
   other host asked through the resolver Docker gives a container (127.0.0.11, the
   embedded DNS, which forwards it to the host's name responder), against Docker's
   embedded DNS answering a same-host name on a bridge network, in the same run,
   rounds alternating;
2. the time from `docker run` of a container on one host to its name resolving in a
   container on the other (polled every 10 ms; `docker run` itself included).

The client is the same for both: a Python process with dnspython inside the asking
container's network namespace, one UDP query at a time to 127.0.0.11.

Run as root:  .venv/bin/python benchmarks/names.py [--queries 300] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.testbed import Testbed
from tests.integration.testbed.docker import Dockerd, close_engines, missing_docker

PYTHON = str(Path(sys.executable))

# Runs in the asking container's netns: `count` queries for `name`, one at a time;
# prints each round trip in ms (None where no A answer came).
ASKER = textwrap.dedent(
    """
    import json, sys, time
    import dns.message, dns.query, dns.rdatatype
    name, count = sys.argv[1], int(sys.argv[2])
    out = []
    for _ in range(count):
        q = dns.message.make_query(name, "A")
        t0 = time.perf_counter()
        try:
            r = dns.query.udp(q, "127.0.0.11", timeout=2)
            ok = any(rr.rdtype == dns.rdatatype.A for rr in r.answer)
        except Exception:
            ok = False
        out.append((time.perf_counter() - t0) * 1000 if ok else None)
    print(json.dumps(out))
    """
)

# Polls `name` every 10 ms from the asking container's netns until it resolves;
# prints the wall-clock time it first did.
POLLER = textwrap.dedent(
    """
    import sys, time
    import dns.message, dns.query, dns.rdatatype
    name, deadline = sys.argv[1], time.time() + float(sys.argv[2])
    while time.time() < deadline:
        try:
            r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.11", timeout=0.5)
            if any(rr.rdtype == dns.rdatatype.A for rr in r.answer):
                print(time.time()); break
        except Exception:
            pass
        time.sleep(0.01)
    """
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ask(tb: Testbed, ns: str, name: str, count: int) -> list[float | None]:
    res = tb.exec(ns, PYTHON, "-c", ASKER, name, str(count), timeout=120, check=True)
    return list(json.loads(res.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300, help="queries per name")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    parser.add_argument("--starts", type=int, default=5, help="docker runs timed")
    args = parser.parse_args()
    missing = missing_docker()
    if missing:
        print("needs: " + "; ".join(missing), file=sys.stderr)
        return 2
    tb = Testbed(["h1", "h2"], docker_hosts=["h1", "h2"], idle_timeout=10)
    engines: list[Dockerd] = []
    try:
        tb.start()
        for host in ("h1", "h2"):
            d = Dockerd(tb, host)
            engines.append(d)
            d.start()
            d.import_image()
        d1, d2 = engines
        d1.ok("network", "create", "-d", "daolinet", "--ipam-driver", "daolinet",
              "--subnet", "10.94.0.0/24", "bench")
        tb.wait_until(lambda: "bench" in d2.ok("network", "ls", "--format", "{{.Name}}"),
                      20, "bench not on h2")
        d2.ok("network", "create", "-d", "bridge", "--subnet", "10.95.0.0/24", "plain")
        d1.run("w1", "bench")
        d2.run("c2", "bench")
        d2.run("b1", "plain")
        d2.run("b2", "plain")
        c2, b2 = d2.attach_netns("c2", "bench"), d2.attach_netns("b2", "plain")
        tb.wait_until(lambda: ask(tb, c2.ns, "w1", 1) != [None], 20, "w1 does not resolve")
        tb.wait_until(lambda: ask(tb, b2.ns, "b1", 1) != [None], 20, "b1 does not resolve")
        ours: list[float | None] = []
        docker: list[float | None] = []
        per_round = max(1, args.queries // args.rounds)
        for _ in range(args.rounds):
            ours += ask(tb, c2.ns, "w1", per_round)
            docker += ask(tb, b2.ns, "b1", per_round)
        got = [v for v in ours if v is not None]
        base = [v for v in docker if v is not None]
        print(f"daolinet name, other host (through 127.0.0.11): median "
              f"{statistics.median(got):.3f} ms, p99 {pct(got, 0.99):.3f} ms "
              f"({len(got)}/{len(ours)} answered)")
        print(f"Docker embedded DNS, same-host name on a bridge network: median "
              f"{statistics.median(base):.3f} ms, p99 {pct(base, 0.99):.3f} ms "
              f"({len(base)}/{len(docker)} answered)")
        delays, after_run = [], []
        for n in range(args.starts):
            name = f"s{n}"
            log = tb.host("h2").dir / f"poll-{name}.log"
            poll = tb.spawn(c2.ns, PYTHON, "-c", POLLER, name, "60", what=f"poll {name}",
                            log=log)
            time.sleep(0.2)  # the poller runs
            started = time.time()
            d1.run(name, "bench")
            returned = time.time()
            tb.wait_until(lambda p=poll: not p.alive(), 60, f"{name} never resolved")
            text = log.read_text().split()
            resolved = float(text[-1])
            delays.append(resolved - started)
            after_run.append(resolved - returned)
            d1.ok("rm", "-f", name)
        print(f"docker run on h1 -> name resolves on h2: median "
              f"{statistics.median(delays):.3f} s, max {max(delays):.3f} s "
              f"({len(delays)} runs; `docker run` itself included)")
        print(f"  of which after `docker run -d` returned: median "
              f"{statistics.median(after_run):.3f} s, max {max(after_run):.3f} s")
    finally:
        close_engines(engines)
        tb.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
