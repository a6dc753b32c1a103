#!/usr/bin/env python3
"""Sites benchmark on the namespace testbed (real OVS, controller, agents, wireguard-go).

Prints two ratios, each against a baseline measured in the same run on the same hosts:

1. cross-site: container-to-container TCP throughput between two hosts of two sites
   (container -> OVS -> kernel -> WireGuard -> underlay -> ... -> container), against
   raw WireGuard throughput host to host (tunnel address to tunnel address) between
   the same two hosts.  Goal: >= 0.9.  Beside it, for the diagnosis: the same
   container path with daolinet's flows bypassed by two static flows per bridge
   (port to LOCAL and back, the same MAC rewrites; daolinet's kernel routes and
   WireGuard allowed-ips stay), which is what this OVS datapath itself costs.
2. same-site: container-to-container TCP throughput through daolinet's flows on one
   host's br-dl, against plain OVS switching (one `actions=NORMAL` flow) on the same
   bridge, datapath and containers.  Goal: >= 0.95.

Every figure is the median of --reps iperf3 runs of --seconds, the two sides of a
ratio interleaved so that a noisy neighbour hits both.

--tso is an experiment, not a supported configuration: OVS userspace TSO
(`other_config:userspace-tso-enable=true` before ovs-vswitchd starts), container-side
tx checksum offload back on (TSO needs it; the agent turns it off on netdev) and the
LOCAL port's MTU set to the WireGuard MTU (OVS 3.1 cuts the TSO frames it writes to
the LOCAL tap to that port's MTU, which must then fit the tunnel).  The agent and the
roles set none of that up.  (The first packet of a connection, which goes through
the controller, used to keep the offload's partial checksum and be dropped; the
controller now completes it: tests/integration/test_offload.py.)

Run as root:  .venv/bin/python benchmarks/sites.py [--seconds 4] [--reps 3] [--tso]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.desired.models import GATEWAY_MAC
from tests.integration.testbed import Container, Host, Testbed

Target = Host | Container | str

TSO_CONFIG = {"userspace-tso-enable": "true"}
WG_MTU = 1420  # hostnet/host/wireguard.py default


def tso_setup(tb: Testbed, containers: list[Container]) -> None:
    """--tso: check that every ovs-vswitchd enabled TSO; container tx checksum on."""
    for h in tb.hosts.values():
        if "Userspace TCP Segmentation Offloading support enabled" not in (
            h.vswitchd_log.read_text()
        ):
            raise RuntimeError(f"ovs-vswitchd of {h.name} did not enable userspace TSO")
    for c in containers:
        for ifname in c.ifnames:
            tb.exec(c, "ethtool", "-K", ifname, "tx", "on", "tso", "on", check=True)


def gbps(tb: Testbed, src: Target, dst: Target, dst_ip: str, seconds: float) -> float:
    server = tb.spawn(dst, "iperf3", "-s", "-1", "-p", "5201", what="iperf3 -s")
    try:
        tb.wait_until(lambda: ":5201" in tb.exec(dst, "ss", "-Hltn").stdout, 5,
                      "iperf3 server did not listen")
        res = tb.exec(src, "iperf3", "-c", dst_ip, "-p", "5201", "-J", "-t", str(seconds),
                      timeout=seconds + 30)
    finally:
        tb.stop(server, timeout=2)
    data = json.loads(res.stdout)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def interleaved(reps: int, *runs: Callable[[], float]) -> list[float]:
    """The median of each run, the runs taking turns so that a noisy neighbour hits all."""
    figures: list[list[float]] = [[] for _ in runs]
    for _ in range(reps):
        for run, out in zip(runs, figures, strict=True):
            out.append(run())
    return [statistics.median(out) for out in figures]


STATIC_COOKIE = 0xBF  # the static flows of the cross-site diagnosis
NORMAL_COOKIE = 0xBE  # the NORMAL flow of the same-site baseline


def ofctl(tb: Testbed, host: str, *args: str) -> None:
    """`ovs-ofctl -O OpenFlow13 CMD unix:MGMT ARGS` on `host`'s br-dl."""
    cmd, *rest = args
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", cmd, f"unix:{tb.hosts[host].mgmt}", *rest],
                   check=True, capture_output=True, timeout=10)


def static_flows(tb: Testbed, c: Container, peer: Container) -> list[str]:
    """The two flows that carry `c`'s traffic with `peer` on `c`'s bridge with no
    daolinet table in the way: what daolinet's per-connection flows do, written once."""
    h = tb.hosts[c.host]
    port = tb.vsctl(h, "get", "Interface", str(c.endpoint["port"]), "ofport").stdout.strip()
    local_mac = tb.vsctl(h, "get", "Interface", "br-dl", "mac_in_use").stdout.strip().strip('"')
    if not port.isdigit() or not local_mac:
        raise RuntimeError(f"no ofport or LOCAL MAC for {c}: {port!r} {local_mac!r}")
    head = f"table=0,priority=65000,cookie={STATIC_COOKIE:#x},ip"
    return [
        f"{head},in_port={port},nw_dst={peer.ip},actions=mod_dl_dst:{local_mac},output:LOCAL",
        f"{head},in_port=LOCAL,nw_dst={c.ip},"
        f"actions=mod_dl_src:{GATEWAY_MAC},mod_dl_dst:{c.mac},output:{port}",
    ]


def set_static(tb: Testbed, pairs: list[tuple[Container, Container]], on: bool) -> None:
    for c, peer in pairs:
        if on:
            for flow in static_flows(tb, c, peer):
                ofctl(tb, c.host, "add-flow", flow)
        else:
            ofctl(tb, c.host, "del-flows", f"table=0,cookie={STATIC_COOKIE:#x}/-1")


def static_packets(tb: Testbed, c: Container) -> list[int]:
    """The packet counts of the static flows on `c`'s bridge."""
    return [f.n_packets for f in tb.parsed_flows(c.host, 0)
            if f.cookie == STATIC_COOKIE]


def cross_site(seconds: float, reps: int, tso: bool = False) -> tuple[float, float, float]:
    tb = Testbed(["h1", "h2"], sites={"h1": "a", "h2": "b"}, wireguard=True,
                 container_tx_off=not tso, idle_timeout=30,
                 ovs_other_config=TSO_CONFIG if tso else None)
    with tb:
        tb.create_network("bench", "10.62.0.0/24")
        c1 = tb.container("h1", "c1", "bench")
        c2 = tb.container("h2", "c2", "bench")
        h1, h2 = tb.hosts["h1"], tb.hosts["h2"]
        if tso:
            tso_setup(tb, [c1, c2])
            for h in (h1, h2):
                res = tb.vsctl(h, "set", "Interface", "br-dl", f"mtu_request={WG_MTU}")
                if res.returncode != 0:
                    raise RuntimeError(f"mtu_request on {h.name}: {res.stderr.strip()}")
        assert tb.ping(c1, c2, count=2)
        assert h2.tunnel is not None
        pairs = [(c1, c2), (c2, c1)]

        def static() -> float:
            # daolinet's routes and allowed-ips for the pair live while its flows do
            # (idle timeout 30 s): refresh them, then bypass its flows.
            assert tb.ping(c1, c2, count=1)
            set_static(tb, pairs, True)
            try:
                figure = gbps(tb, c1, c2, c2.ip, seconds)
                # Both flows on both bridges carried the run (else daolinet's did).
                counts = static_packets(tb, c1) + static_packets(tb, c2)
                if len(counts) != 4 or min(counts) < 1000:
                    raise RuntimeError(f"the static flows did not carry the run: {counts}")
                return figure
            finally:
                set_static(tb, pairs, False)

        dl, st, wg = interleaved(
            reps,
            lambda: gbps(tb, c1, c2, c2.ip, seconds),
            static,
            lambda: gbps(tb, h1, h2, h2.tunnel or "", seconds),
        )
        return dl, st, wg


def same_site(seconds: float, reps: int, tso: bool = False) -> tuple[float, float]:
    tb = Testbed(["h1"], container_tx_off=not tso, idle_timeout=30,
                 ovs_other_config=TSO_CONFIG if tso else None)
    with tb:
        tb.create_network("bench", "10.63.0.0/24")
        c1 = tb.container("h1", "c1", "bench")
        c2 = tb.container("h1", "c2", "bench")
        if tso:
            tso_setup(tb, [c1, c2])
        normal = f"table=0,priority=65000,cookie={NORMAL_COOKIE:#x},actions=NORMAL"

        def switch_normal(on: bool) -> None:
            for c in (c1, c2):  # the ARP answers differ: gateway MAC vs the peer's
                tb.exec(c, "ip", "neigh", "flush", "all")
            if on:
                ofctl(tb, "h1", "add-flow", normal)
            else:
                ofctl(tb, "h1", "del-flows", f"table=0,cookie={NORMAL_COOKIE:#x}/-1")

        def daolinet() -> float:
            switch_normal(False)
            assert tb.ping(c1, c2, count=2)
            return gbps(tb, c1, c2, c2.ip, seconds)

        def plain() -> float:
            switch_normal(True)
            assert tb.ping(c1, c2, count=2)
            try:
                return gbps(tb, c1, c2, c2.ip, seconds)
            finally:
                switch_normal(False)

        ds, baseline = interleaved(reps, daolinet, plain)
        return ds, baseline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tso", action="store_true",
                    help="experiment: OVS userspace TSO (not set up by the agent, see above)")
    args = ap.parse_args()
    if args.tso:
        print("--tso: userspace TSO, container tx checksum on, LOCAL MTU "
              f"{WG_MTU}")
    dl, st, wg = cross_site(args.seconds, args.reps, args.tso)
    print(f"cross-site container->container  {dl:6.3f} Gbit/s")
    print(f"raw WireGuard host->host          {wg:6.3f} Gbit/s")
    print(f"  ratio {dl / wg:.3f}  (goal >= 0.90)")
    print(f"same path, static OVS flows       {st:6.3f} Gbit/s")
    print(f"  daolinet / static {dl / st:.3f}   static / raw WireGuard {st / wg:.3f}")
    ds, normal = same_site(args.seconds, args.reps, args.tso)
    print(f"same-site container->container    {ds:6.3f} Gbit/s")
    print(f"plain OVS NORMAL, same bridge      {normal:6.3f} Gbit/s")
    print(f"  ratio {ds / normal:.3f}  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
