#!/usr/bin/env python3
"""Scale benchmark: the real controller process with simulated switches and agents.

N hosts (one simulated br-dl each, OpenFlow 1.3 over TCP to the controller, and one
simulated agent on the agent stream) and M containers registered through the API,
spread over S sites.  New connections between allowed pairs (same host, cross-host,
cross-site) as fast as answered (`--outstanding` per switch) or at `--rate`.
Prints, each from this run:

- registration time, store size, idle controller CPU and RSS;
- setups/s and its per-second series (a stall shows as a second near 0), with the
  controller-side first-packet latency (PacketIn written to the last FlowMod or
  PacketOut of the setup received, on both switches), controller CPU under load,
  and the controller's own setup counter for the same window;
- cold start (the controller restarted with M containers in its store: process start
  to API and OpenFlow serving) and resync (restart to every switch's first setup);
- the baseline: a minimal os-ken app answering each PacketIn with one FlowMod and
  one PacketOut, on the same simulated switches (benchmarks/simnet/baseline_app.py);
- the simulator's own capacity (setups per second of its CPU), which must stay well
  above what it measures.

The last line is one JSON object.  No root needed: everything is on loopback.

    .venv/bin/python benchmarks/scale.py --hosts 100 --containers 10000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import math
import os
import resource
import shutil
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simnet.agents import SimAgent
from benchmarks.simnet.procs import Baseline, Controller, Controllers, Proc
from benchmarks.simnet.switch import PortDesc, SimSwitch
from benchmarks.simnet.tracker import Tracker
from benchmarks.simnet.workload import (
    T_STATEFUL,
    Container,
    Fabric,
    PhaseResult,
    Workload,
    baseline_expect,
    daolinet_expect,
)
from tests.etcdcluster import EtcdCluster
from tests.pki import TestCA

NETWORK = "scale"
LOCAL_PORT = 0xFFFFFFFE


def host_body(i: int, sites: int) -> dict[str, Any]:
    address = f"198.18.{i // 250}.{i % 250 + 1}"
    body: dict[str, Any] = {"name": f"h{i}", "address": address, "site": f"s{i % sites}"}
    if sites > 1:  # WireGuard facts, so cross-site pairs have a path
        key = base64.b64encode(hashlib.sha256(f"h{i}".encode()).digest()).decode()
        body |= {"wg_public_key": key, "wg_endpoint": f"{address}:51820",
                 "tunnel_address": f"100.64.{i // 250}.{i % 250 + 1}"}
    return body


def subnet(containers: int) -> ipaddress.IPv4Network:
    prefix = min(24, 32 - math.ceil(math.log2(containers + 4)))
    return ipaddress.IPv4Network(f"10.0.0.0/{prefix}")


async def register(ctl: Controller, args: argparse.Namespace) -> dict[str, float]:
    t0 = time.monotonic()
    await ctl.post_all("/hosts", [host_body(i, args.sites) for i in range(args.hosts)], 4)
    net = subnet(args.containers)
    ctl.api("POST", "/networks", {"name": NETWORK, "subnet": str(net)})
    t1 = time.monotonic()
    first = int(net.network_address) + 2
    bodies = [{"name": f"c{i}", "network": NETWORK, "host": f"h{i % args.hosts}",
               "ip": str(ipaddress.IPv4Address(first + i))} for i in range(args.containers)]
    await ctl.post_all("/containers", bodies, args.parallel)
    t2 = time.monotonic()
    return {"hosts_s": round(t1 - t0, 2), "containers_s": round(t2 - t1, 2),
            "containers_per_s": round(args.containers / (t2 - t1), 1)}


def fabric_of(ctl: Controller) -> tuple[Fabric, list[list[PortDesc]]]:
    hosts = sorted(ctl.api("GET", "/hosts"), key=lambda h: int(h["name"][1:]))
    index = {h["name"]: i for i, h in enumerate(hosts)}
    containers: list[list[Container]] = [[] for _ in hosts]
    ports: list[list[PortDesc]] = [
        [PortDesc(LOCAL_PORT, "br-dl", f"0e:00:00:00:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}")]
        for i in range(len(hosts))
    ]
    for c in ctl.api("GET", "/containers"):
        h = index[c["host"]]
        port_no = len(ports[h])
        ports[h].append(PortDesc(port_no, c["port"], f"fe:{port_no >> 8 & 0xFF:02x}:"
                                 f"{port_no & 0xFF:02x}:00:{h >> 8 & 0xFF:02x}:{h & 0xFF:02x}"))
        containers[h].append(Container(h, int(ipaddress.IPv4Address(c["ip"])),
                                       bytes.fromhex(c["mac"].replace(":", "")), port_no))
    fabric = Fabric([h["name"] for h in hosts], [int(h["site"][1:]) for h in hosts],
                    [int(h["dpid"]) for h in hosts], containers)
    return fabric, ports


def progress(what: str) -> None:
    """A progress line on stderr (stdout holds the figures)."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


async def wait_for(what: str, check: Any, timeout: float) -> float:
    progress(f"waiting: {what}")
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not after {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def switch_tls(ca: TestCA | None, host: str) -> ssl.SSLContext | None:
    """A switch's TLS client context: its host's certificate (OU=host, CN=host), as
    the agent gives OVS; None: plain TCP."""
    if ca is None:
        return None
    own = ca.issue(host, "host", ips=["127.0.0.1"])
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    context.load_cert_chain(own.cert_file, own.key_file)
    return context


def sim_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measured(ctl: Proc | Controllers, work: Workload, args: argparse.Namespace
                   ) -> tuple[PhaseResult, dict[str, float]]:
    """One load phase, with the controller's and the simulator's CPU over it."""
    c0 = ctl.cpu_seconds()
    s0, t0 = sim_cpu(), time.monotonic()
    d0 = sum(s.stats.disconnects for s in work.switches)
    result = await work.run(args.duration, args.outstanding, args.rate)
    wall = time.monotonic() - t0
    sim = sim_cpu() - s0
    return result, {
        "controller_cpu_pct": round(100 * (ctl.cpu_seconds() - c0) / wall, 1),
        "sim_cpu_pct": round(100 * sim / wall, 1),
        "disconnects": sum(s.stats.disconnects for s in work.switches) - d0,
        "sim_capacity_per_s": round(result.setups / sim, 0) if sim > 0 else float("inf"),
    }


async def daolinet_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    profile = workdir / "profile.txt" if args.profile else None
    etcd = None
    # the deployment CA: the controllers, the switches and the baseline; etcd has a CA
    # of its own, which issues the replicas' etcd client certificates
    ca = TestCA(workdir / "pki") if args.tls else None
    if args.replicas > 1 or args.etcd:
        etcd = EtcdCluster(1, tls=args.tls)
    ctls = Controllers(workdir, args.replicas, args.idle_timeout,
                       etcd.url("daolinet-scale") if etcd else None,
                       etcd.dir if etcd else None, ca, profile,
                       etcd.ca if etcd else None)
    ctl = ctls.first
    ctls.start()
    switches: list[SimSwitch] = []
    agents: list[SimAgent] = []
    try:
        out["first_start_s"] = round(await asyncio.to_thread(ctls.wait_ready), 2)
        progress("registering")
        out["register"] = await register(ctl, args)
        out["store_mb"] = round(ctls.store_mb(), 1)
        fabric, ports = await asyncio.to_thread(fabric_of, ctl)
        by_dpid: dict[int, SimSwitch] = {}

        def underlay(dpid: int, frame: bytes) -> None:
            by_dpid[dpid].packet_in(LOCAL_PORT, T_STATEFUL, frame)

        tracker = Tracker(args.setup_timeout, underlay if args.replicas > 1 else None)
        switches = [SimSwitch(d, p, tracker, ctls.targets, switch_tls(ca, h))
                    for d, p, h in zip(fabric.dpids, ports, fabric.hosts, strict=True)]
        by_dpid.update((s.dpid, s) for s in switches)
        # under TLS each agent presents its host's certificate, as a real agent does
        agents = [SimAgent(h, [c.url for c in ctls.all], ctl.token, args.ack_delay,
                           switch_tls(ca, h))
                  for h in fabric.hosts]
        t0 = time.monotonic()
        await asyncio.gather(*(s.connect() for s in switches))
        for a in agents:
            a.start()
        await wait_for("switches synced", lambda: all(s.stats.synced_at for s in switches),
                       args.sync_timeout)
        await wait_for("agents' snapshots", lambda: all(a.stats.snapshot_at for a in agents),
                       args.sync_timeout)
        out["connect_s"] = round(time.monotonic() - t0, 2)
        await asyncio.sleep(2)  # the first dumps and snapshots settle
        out["idle_cpu_pct"] = round(await ctls.cpu_percent(args.idle_window), 1)
        out["idle_rss_mb"] = round(ctls.rss_mb(), 1)
        work = Workload(fabric, switches, tracker, daolinet_expect)
        progress("load")
        m0 = await asyncio.to_thread(ctls.metrics)
        if profile:
            os.kill(ctl.pid, signal.SIGUSR1)  # the profile covers the load only
        result, cpu = await measured(ctls, work, args)
        if profile:
            os.kill(ctl.pid, signal.SIGUSR2)
            await asyncio.sleep(0.5)
            shutil.copy(profile, workdir / "profile-load.txt")
        m1 = await asyncio.to_thread(ctls.metrics)
        out["load"] = result.__dict__ | cpu
        out["controller_setups"] = int(m1["daolinet_setups_total"]
                                       - m0["daolinet_setups_total"])
        out["controller_failed"] = int(m1["daolinet_failed_setups_total"]
                                       - m0["daolinet_failed_setups_total"])
        dropped = "daolinet_packet_ins_dropped_total"  # the controller's own PacketIn budget
        out["controller_dropped"] = int(m1.get(dropped, 0) - m0.get(dropped, 0))
        out["load_rss_mb"] = round(ctls.rss_mb(), 1)
        # Restart: cold start with everything in the store, then every switch's resync.
        progress("restart")
        ctls.stop()
        ctls.start()
        out["cold_start_s"] = round(await asyncio.to_thread(ctls.wait_ready), 2)
        first = await work.resync(min(c.started for c in ctls.all), args.resync_timeout)
        out["resynced"] = len(first)
        out["resync_missing"] = [
            f"{fabric.hosts[h]} (switch {'synced' if sw.stats.synced_at else 'not synced'}, "
            f"agent {'has' if agents[h].stats.snapshot_at else 'lacks'} its snapshot)"
            for h, sw in enumerate(switches) if h not in first][:5]
        out["agent_errors"] = [a.stats.last_error for a in agents if a.stats.errors][:3]
        out["resync_s"] = round(max(first.values()), 2) if len(first) == len(switches) \
            else float("nan")
        out["resync_median_s"] = round(sorted(first.values())[len(first) // 2], 2) \
            if first else float("nan")
    finally:
        for s in switches:
            s.close()
        for a in agents:
            await a.stop()
        ctls.stop()
        if etcd is not None:
            etcd.close()
    return out | {"_fabric": fabric, "_ports": ports, "_ca": ca}


async def baseline_run(args: argparse.Namespace, workdir: Path, fabric: Fabric,
                       ports: list[list[PortDesc]], ca: TestCA | None) -> dict[str, Any]:
    progress("baseline")
    base = Baseline(workdir, args.idle_timeout, ca)
    base.start()
    switches: list[SimSwitch] = []
    try:
        await asyncio.to_thread(base.wait_ready)
        tracker = Tracker(args.setup_timeout)
        target = ("127.0.0.1", base.of_port)
        switches = [SimSwitch(d, p, tracker, [target], switch_tls(ca, h))
                    for d, p, h in zip(fabric.dpids, ports, fabric.hosts, strict=True)]
        await asyncio.gather(*(s.connect() for s in switches))
        await asyncio.sleep(1 + len(switches) / 500)  # os-ken's handshake of each switch
        work = Workload(fabric, switches, tracker, baseline_expect, fresh=False)
        result, cpu = await measured(base, work, args)
        return result.__dict__ | cpu
    finally:
        for s in switches:
            s.close()
        base.stop()


def report(args: argparse.Namespace, d: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    load = d["load"]
    ratio = load["per_s"] / b["per_s"] if b["per_s"] else float("nan")
    reg = d["register"]
    store = f"{args.replicas} replica(s) on etcd" if args.replicas > 1 or args.etcd \
        else "1 controller on SQLite"
    store += ", OpenFlow over TLS" if args.tls else ", OpenFlow over TCP"
    print(f"{args.hosts} hosts, {args.containers} containers, {args.sites} site(s), {store}; "
          f"ack delay {args.ack_delay} s, idle timeout {args.idle_timeout} s, "
          + (f"rate {args.rate}/s" if args.rate > 0 else
             f"{args.outstanding} outstanding per switch"))
    print(f"registration: hosts {reg['hosts_s']} s, containers {reg['containers_s']} s "
          f"({reg['containers_per_s']}/s); store {d['store_mb']} MB; "
          f"switches and agents synced in {d['connect_s']} s")
    print(f"idle controller: CPU {d['idle_cpu_pct']}% of a core, RSS {d['idle_rss_mb']} MB")
    print(f"setups: {load['per_s']}/s over {load['seconds']} s ({load['setups']}; "
          f"controller counted {d['controller_setups']}, failed {d['controller_failed']}, "
          f"PacketIns dropped {d['controller_dropped']}; "
          f"lost {load['lost']}, denied {load['denied']}, switch disconnects "
          f"{load['disconnects']}; sent {load['kinds']})")
    print(f"  per second: {load['series']}")
    print(f"  controller-side first-packet latency p50 {load['p50_ms']} ms, "
          f"p99 {load['p99_ms']} ms; controller CPU {load['controller_cpu_pct']}%, "
          f"RSS {d['load_rss_mb']} MB")
    print(f"baseline (minimal os-ken app): {b['per_s']}/s (p50 {b['p50_ms']} ms, "
          f"p99 {b['p99_ms']} ms, CPU {b['controller_cpu_pct']}%, lost {b['lost']}, switch "
          f"disconnects {b['disconnects']}); per second {b['series']}; "
          f"ratio {ratio:.2f}")
    print(f"restart: cold start {d['cold_start_s']} s; every switch set up a connection "
          f"again {d['resync_s']} s after the restart (median {d['resync_median_s']} s, "
          f"{d['resynced']} of {args.hosts})"
          + (f"; not resynced: {', '.join(d['resync_missing'])}" if d["resync_missing"] else ""))
    if d["agent_errors"]:
        print(f"simulated agents failed: {d['agent_errors']}")
    print(f"simulator (must not be the bottleneck): {load['sim_cpu_pct']}% of a core under "
          f"daolinet, {b['sim_cpu_pct']}% under the baseline; setups per second of its own "
          f"CPU: {load['sim_capacity_per_s']:.0f} with daolinet's messages, "
          f"{b['sim_capacity_per_s']:.0f} with the baseline's")
    return {
        "hosts": args.hosts, "containers": args.containers, "sites": args.sites,
        "replicas": args.replicas, "etcd": args.replicas > 1 or args.etcd, "tls": args.tls,
        "setups_per_s": load["per_s"], "baseline_per_s": b["per_s"],
        "ratio": round(ratio, 3), "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
        "baseline_p50_ms": b["p50_ms"], "baseline_p99_ms": b["p99_ms"],
        "series": load["series"], "baseline_series": b["series"],
        "lost": load["lost"], "denied": load["denied"], "disconnects": load["disconnects"],
        "baseline_lost": b["lost"], "baseline_disconnects": b["disconnects"],
        "controller_setups": d["controller_setups"], "controller_dropped": d["controller_dropped"],
        "rss_mb": d["load_rss_mb"], "idle_rss_mb": d["idle_rss_mb"],
        "idle_cpu_pct": d["idle_cpu_pct"], "load_cpu_pct": load["controller_cpu_pct"],
        "store_mb": d["store_mb"], "register_s": d["register"]["containers_s"],
        "cold_start_s": d["cold_start_s"], "resync_s": d["resync_s"],
        "sim_cpu_pct": load["sim_cpu_pct"], "sim_baseline_cpu_pct": b["sim_cpu_pct"],
        "sim_capacity_per_s": load["sim_capacity_per_s"],
        "sim_baseline_capacity_per_s": b["sim_capacity_per_s"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="daolinet-scale-"))
    keep = args.keep
    try:
        d = await daolinet_run(args, workdir)
        # a switch that did not resync: keep the controller's log to see why
        keep = keep or bool(d["resync_missing"])
        b = await baseline_run(args, workdir, d.pop("_fabric"), d.pop("_ports"), d.pop("_ca"))
        return report(args, d, b)
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"logs and store kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--containers", type=int, default=10_000)
    ap.add_argument("--sites", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=1, choices=[1, 2, 3],
                    help="controller replicas on one etcd member (tests/etcdcluster.py); "
                         "every switch connects to each, every agent finds its master")
    ap.add_argument("--tls", action="store_true",
                    help="OpenFlow (and etcd) over TLS with certificates of a test CA "
                         "(tests/pki.py), the baseline's too; default: plain TCP")
    ap.add_argument("--etcd", action="store_true",
                    help="one controller on etcd instead of SQLite (the base of --replicas)")
    ap.add_argument("--rate", type=float, default=0,
                    help="setups per second (0: as fast as answered)")
    ap.add_argument("--outstanding", type=int, default=4,
                    help="setups in flight per switch when --rate is 0")
    ap.add_argument("--duration", type=float, default=10, help="seconds of load")
    ap.add_argument("--ack-delay", type=float, default=0.0,
                    help="seconds a simulated agent takes to acknowledge routes")
    ap.add_argument("--idle-timeout", type=int, default=60,
                    help="the controller's (and the baseline's) flow idle timeout; below "
                         "--duration, flows expire inside the window: sustained load")
    ap.add_argument("--setup-timeout", type=float, default=30,
                    help="seconds after which a setup counts as lost (and the next starts)")
    ap.add_argument("--parallel", type=int, default=8, help="API requests at a time")
    ap.add_argument("--idle-window", type=float, default=5,
                    help="seconds over which the idle CPU is measured")
    ap.add_argument("--sync-timeout", type=float, default=300)
    ap.add_argument("--resync-timeout", type=float, default=120)
    ap.add_argument("--quick", action="store_true",
                    help="a small run that checks the benchmark works (defaults: 4 hosts, "
                         "80 containers, 2 sites, 3 s, idle timeout 2 s)")
    ap.add_argument("--keep", action="store_true", help="keep the logs and the store")
    ap.add_argument("--profile", action="store_true",
                    help="sample the controller's stacks (benchmarks/simnet/sampler.py) "
                         "under load into profile-load.txt of the kept directory (implies "
                         "--keep)")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        ap.set_defaults(hosts=4, containers=80, sites=2, duration=3, idle_timeout=2,
                        idle_window=1, sync_timeout=60, resync_timeout=60)
    args = ap.parse_args(argv)
    args.keep = args.keep or args.profile
    if args.hosts < 1 or args.containers < 2 * args.hosts or not 1 <= args.sites <= args.hosts:
        ap.error("need hosts >= 1, containers >= 2 per host, 1 <= sites <= hosts")
    return args


def main() -> int:
    args = options()
    figures = asyncio.run(run(args))
    # JSON has no NaN (a figure that could not be measured): null
    print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v
                      for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
