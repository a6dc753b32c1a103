#!/usr/bin/env python3
"""Hot-plug benchmark on the namespace testbed (real OVS, real controller and agents).

Prints three figures, each against a baseline measured in the same run:

1. first-packet latency: first-packet RTT minus the steady RTT of the same pair,
   over fresh cross-host container pairs (the baseline is the steady RTT);
2. setup rate: new pairs per second whose first packet is answered, daolinet against
   a plain MAC-learning switch (simple_switch_13's logic, benchmarks/learning_switch.py)
   on the same bridge and containers;
3. idle state: flows and kernel routes per host after the idle timeout with many
   registered containers and no traffic, against the fixed base flows.

Run as root:  .venv/bin/python benchmarks/hotplug.py [--pairs-side 10] [--rate-containers 16]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.datapath.state import CoreState
from controller.datapath.tables import KIND_BASE, KIND_GUARD, base_flows
from tests.integration.testbed import Testbed

# Runs inside a source container: one connected UDP socket per destination, one
# datagram each; the destination's ICMP port-unreachable proves the round trip.
PROBER = textwrap.dedent(
    """
    import json, select, socket, sys, time
    dsts = json.loads(sys.argv[1]); start_at = float(sys.argv[2]); deadline = float(sys.argv[3])
    socks = {}
    while time.time() < start_at: time.sleep(0.0005)
    for d in dsts:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
        s.connect((d, 9)); s.send(b"x"); socks[s.fileno()] = (s, d)
    done = {}
    poll = select.poll()
    for fd in socks: poll.register(fd, select.POLLIN | select.POLLERR)
    while len(done) < len(dsts) and time.time() - start_at < deadline:
        for fd, _ in poll.poll(50):
            s, d = socks[fd]
            if d in done: continue
            try: s.recv(16)
            except ConnectionRefusedError: done[d] = time.time()
            except BlockingIOError: continue
            poll.unregister(fd)
    print(json.dumps({"answered": done, "sent": len(dsts)}))
    """
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ping_times(tb: Testbed, src: str, dst_ip: str, count: int) -> list[float]:
    res = tb.exec(src, "ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", dst_ip,
                  timeout=30)
    times: dict[int, float] = {}
    for line in res.stdout.splitlines():
        if "icmp_seq=" in line and "time=" in line:
            seq = int(line.split("icmp_seq=")[1].split()[0])
            times[seq] = float(line.split("time=")[1].split()[0])
    return [times.get(i, float("nan")) for i in range(1, count + 1)]


def first_packet(tb: Testbed, side: int, tag: str = "") -> dict[str, float]:
    """`tag`: in the containers' names, to measure again on new containers."""
    left = [tb.container("h1", f"fa{tag}{i}", "bench") for i in range(side)]
    right = [tb.container("h2", f"fb{tag}{i}", "bench") for i in range(side)]
    overheads, steadies, lost = [], [], 0
    for a in left:
        for b in right:
            # The neighbour is preset so the figure is the route setup, not ARP.
            tb.exec(a.ns, "ip", "neigh", "replace", b.ip, "lladdr", "02:da:00:00:00:01",
                    "dev", "eth0", "nud", "permanent")
            times = ping_times(tb, a.ns, b.ip, 6)
            if times[0] != times[0]:  # NaN: the first packet was lost
                lost += 1
                continue
            steady = statistics.median(t for t in times[1:] if t == t)
            steadies.append(steady)
            overheads.append(times[0] - steady)
    return {
        "pairs": side * side,
        "first_packet_lost": lost,
        "steady_rtt_median_ms": statistics.median(steadies),
        "overhead_median_ms": statistics.median(overheads),
        "overhead_p99_ms": pct(overheads, 0.99),
    }


def peers(containers: list, i: int, fanout: int) -> list:
    """The `fanout` containers after the i-th, round the ring."""
    return [containers[(i + k) % len(containers)] for k in range(1, fanout + 1)]


def probe_all(tb: Testbed, groups: list[list], neigh_mac: dict[str, str],
              fanout: int) -> dict[str, float]:
    """Every container sends one datagram to each of `fanout` new peers of its group
    (e.g. the containers of one host), all at once, every group at the same time.

    `fanout` stays within a container's PacketIn burst (controller option
    --packet-in-burst): beyond it the switch's meter drops first packets on purpose.
    """
    # Neighbours both ways (the peer answers), so neither switch is timed on ARP.
    for containers in groups:
        for i, a in enumerate(containers):
            for b in peers(containers, i, fanout):
                for x, y in ((a, b), (b, a)):
                    tb.exec(x.ns, "ip", "neigh", "replace", y.ip, "lladdr", neigh_mac[y.ip],
                            "dev", "eth0", "nud", "permanent")
    # Every prober starts sending at the same wall-clock instant: a real burst.
    start_at = time.time() + 1.0 + 0.05 * sum(len(g) for g in groups)
    procs = []
    for containers in groups:
        for i, a in enumerate(containers):
            dsts = [b.ip for b in peers(containers, i, fanout)]
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", a.ns, sys.executable, "-c", PROBER, json.dumps(dsts),
                 str(start_at), "5"],
                stdout=subprocess.PIPE, text=True,
            ))
    answers: list[float] = []
    sent = 0
    for p in procs:
        out = json.loads(p.communicate(timeout=30)[0])
        answers += out["answered"].values()
        sent += out["sent"]
    elapsed = (max(answers) - start_at) if answers else 5.0
    return {"pairs": sent, "answered": len(answers),
            "failed_pct": 100 * (sent - len(answers)) / sent,
            "seconds": round(elapsed, 3), "pairs_per_s": round(len(answers) / elapsed, 1)}


def rate_containers(tb: Testbed, n: int, tag: str = "") -> tuple[list, int]:
    """n containers on h1 and the new peers each one probes: half a PacketIn burst
    (each one is also the peer that answers others)."""
    cs = [tb.container("h1", f"r{tag}{i}", "bench") for i in range(n)]
    return cs, min(n - 1, CoreState().packet_in_burst // 2)


def daolinet_rate(tb: Testbed, n: int, tag: str = "") -> dict[str, float]:
    """Setup rate of n new containers under daolinet alone (no baseline)."""
    cs, fanout = rate_containers(tb, n, tag)
    return probe_all(tb, [cs], {c.ip: "02:da:00:00:00:01" for c in cs}, fanout)


def setup_rate(tb: Testbed, n: int) -> dict[str, dict[str, float]]:
    cs, fanout = rate_containers(tb, n)
    daolinet = probe_all(tb, [cs], {c.ip: "02:da:00:00:00:01" for c in cs}, fanout)
    # Baseline: the same bridge and containers under a plain learning switch.
    h = tb.host("h1")
    port = tb.free_port()
    log = open(tb.dir / "simple_switch.log", "w")  # noqa: SIM115
    launcher = (
        "from os_ken.base.app_manager import AppManager\n"
        "from os_ken import cfg\n"
        "from os_ken.controller import controller\n"
        f"cfg.CONF(args=['--ofp-listen-host','{tb.controller_ip}',"
        f"'--ofp-tcp-listen-port','{port}'], project='os_ken')\n"
        "AppManager.run_apps(['learning_switch'])\n"
    )
    ours = tb.vsctl(h, "get-controller", "br-dl").stdout.split()
    baseline = subprocess.Popen([sys.executable, "-c", launcher], stdout=log, stderr=log,
                                cwd=Path(__file__).parent)
    try:
        time.sleep(2)
        tb.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "del-flows", f"unix:{h.mgmt}")
        tb.vsctl(h, "set-controller", "br-dl", f"tcp:{tb.controller_ip}:{port}")
        time.sleep(2)  # learning_switch installs its table-miss flow on connect
        learning = probe_all(tb, [cs], {c.ip: c.mac for c in cs}, fanout)
    finally:
        baseline.terminate()
        baseline.wait(10)
        # Back to daolinet: it re-adds its base flows when the switch reconnects.
        tb.exec(h, "ovs-ofctl", "-O", "OpenFlow13", "del-flows", f"unix:{h.mgmt}")
        tb.vsctl(h, "set-controller", "br-dl", *ours)
        time.sleep(2)
    return {"daolinet": daolinet, "learning_switch": learning}


def idle_state(tb: Testbed, registered: int) -> dict[str, object]:
    net = ipaddress.IPv4Network("10.200.0.0/16")
    hosts = list(tb.hosts)
    for i in range(registered):
        tb.api_json("POST", "/containers", {
            "name": f"idle{i}", "network": "idle", "host": hosts[i % len(hosts)],
            "ip": str(net.network_address + 10 + i),
        })
    tb.wait_idle(timeout=tb.idle_timeout * 4 + 10)
    time.sleep(2)  # let the agents apply the last local routes
    per_host = {}
    for name in hosts:
        flows = tb.parsed_flows(name)
        routes = tb.parsed_kernel_routes(name)
        per_host[name] = {
            "base_flows": sum(1 for f in flows if f.kind == KIND_BASE),
            "per_container_flows": sum(1 for f in flows if f.kind == KIND_GUARD),
            "connection_flows": len(tb.connection_flows(name)),
            "other_flows": sum(1 for f in flows if f.kind not in (KIND_BASE, KIND_GUARD)),
            "via_routes": len(tb.via_routes(name)),
            "local_routes": len(routes) - len(tb.via_routes(name)),
            "attached_containers": len(tb.api_json("GET", f"/containers?host={name}")),
        }
    return {"registered_containers": registered, "base_flows": len(base_flows()),
            "per_host": per_host}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs-side", type=int, default=10, help="N: N*N cross-host pairs")
    ap.add_argument("--rate-containers", type=int, default=32)
    ap.add_argument("--registered", type=int, default=1000)
    ap.add_argument("--idle-timeout", type=int, default=5)
    args = ap.parse_args()
    with Testbed(hosts=2, idle_timeout=args.idle_timeout) as tb:
        tb.create_network("bench", "10.1.0.0/24")
        tb.create_network("idle", "10.200.0.0/16")
        fp = first_packet(tb, args.pairs_side)
        print(f"first packet over {fp['pairs']} fresh cross-host pairs: "
              f"overhead median {fp['overhead_median_ms']:.3f} ms, "
              f"p99 {fp['overhead_p99_ms']:.3f} ms "
              f"(baseline steady RTT median {fp['steady_rtt_median_ms']:.3f} ms), "
              f"first packets lost: {fp['first_packet_lost']}")
        rate = setup_rate(tb, args.rate_containers)
        d, b = rate["daolinet"], rate["learning_switch"]
        print(f"setup rate, {d['pairs']} new same-host pairs at once "
              f"({args.rate_containers} containers x {CoreState().packet_in_burst // 2} peers): "
              f"daolinet "
              f"{d['pairs_per_s']}/s ({d['failed_pct']:.2f}% failed), learning_switch "
              f"{b['pairs_per_s']}/s ({b['failed_pct']:.2f}% failed), "
              f"ratio {d['pairs_per_s'] / b['pairs_per_s']:.2f}")
        idle = idle_state(tb, args.registered)
        print(f"idle state with {idle['registered_containers']} registered containers, "
              f"0 connections (base flows: {idle['base_flows']}):")
        for host, row in idle["per_host"].items():  # type: ignore[attr-defined]
            print(f"  {host}: {row}")
        print(json.dumps({"first_packet": fp, "setup_rate": rate, "idle": idle}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
