"""The controller's hot paths at scale, without switches, agents or sockets.

A unit-level benchmark (issue 22, "make it fast"): the real inventory (SQLite in
memory), index, runtime and pure core, driven the way tests/unit/flowsim.py
drives them, with the OpenFlow messages counted instead of sent and every route
delta acknowledged at once.  It times, at N hosts and M containers:

* registering the M containers (inventory + core, then each port appearing), or
  with `--preload` writing them straight into the index in one version (to time
  the other phases at sizes where registration itself would take too long);
* setting up `--pairs` connections (half same-host, half cross-host);
* one round of flow dumps of every switch (what the periodic dump costs the core);
* an idle tick (the periodic work with no traffic);
* /metrics (the counters and live connections, total and per host);
* removing `--remove` containers that have connections (the core's part: its
  connections torn down on every switch, its routes and guard flows);
* a FlowRemoved storm (every connection flow expiring, one notice each), handed to
  the core in batches of `--removal-batch` per switch (the os-ken app batches a
  run of queued notices, at most its queue's 128; 1: one at a time, as before).

Each phase prints its wall and CPU time (this process's: on a shared machine the
CPU time is the steadier figure); `--profile PHASE` prints that phase's cProfile.
The last line is one JSON object.  Example:

    python benchmarks/core_hotpath.py --hosts 100 --containers 10000 --pairs 5000
"""

from __future__ import annotations

import argparse
import cProfile
import ipaddress
import json
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.api.counterfloor import CounterFloor
from controller.api.metrics import ControllerCollector, render
from controller.datapath.effects import KernelRouteDelta
from controller.datapath.events import DumpedFlow, PacketInfo, PortInfo, RemovedFlow
from controller.datapath.messages import (
    OFPP_LOCAL,
    FlowAdd,
    FlowDelete,
    OFMessage,
    Output,
)
from controller.datapath.runtime import ConnectionSink, DatapathRuntime
from controller.desired.index import DesiredIndex
from controller.desired.inventory import Inventory
from controller.desired.models import Endpoint, Host, NatRule, mac_for_ip
from controller.store.sqlite import SqliteStore

IPv4 = ipaddress.IPv4Address


class Roles:
    """One controller, master of every switch."""

    me = None
    master = 1
    member = False
    assignment_generation = 0

    def is_master(self, dpid: int) -> bool:
        return True

    def owner(self, dpid: int) -> str | None:
        return None

    def owner_api(self, dpid: int) -> str | None:
        return None

    def listen(self, listener: Callable[[], None]) -> None:
        pass

    # what /metrics reads
    mastered: frozenset[int] = frozenset()
    connected: frozenset[int] = frozenset()
    refusals: dict[str, int] = {}  # noqa: RUF012

    def connected_now(self) -> frozenset[int]:
        return self.connected


class Switches:
    """Keeps each switch's flows (by cookie) as a switch would, counts the rest."""

    def __init__(self) -> None:
        self.flows: dict[int, dict[int, FlowAdd]] = {}
        self.sent = 0

    def send(self, dpid: int, msgs: list[OFMessage]) -> None:
        table = self.flows.setdefault(dpid, {})
        self.sent += len(msgs)
        for m in msgs:
            if isinstance(m, FlowAdd):
                table[m.cookie] = m
            elif isinstance(m, FlowDelete) and m.strict:
                for ck in [c for c, f in table.items() if f.match == m.match
                           and f.table == m.table and f.priority == m.priority]:
                    del table[ck]

    def dump(self, dpid: int) -> list[DumpedFlow]:
        out = []
        for f in self.flows.get(dpid, {}).values():
            port = next((a.port for a in f.actions if isinstance(a, Output)), None)
            out.append(DumpedFlow(f.cookie, f.table, f.priority, f.match, port, 1, 1.0))
        return out


class Agents:
    """Acknowledges every route delta at once, like an agent with no latency."""

    def __init__(self) -> None:
        self.runtime: DatapathRuntime | None = None
        self.deltas = 0

    def send_delta(self, delta: KernelRouteDelta) -> None:
        self.deltas += 1
        if delta.token is not None and self.runtime is not None:
            self.runtime.handle_timed(self.runtime.core.routes_acked, delta.host, delta.token)

    def host_synced(self, host: str) -> None:
        pass

    def send_nat(self, host: str, rules: list[NatRule]) -> None:
        pass

    def send_mesh(self, hosts: list[Host]) -> None:
        pass

    def names_changed(self) -> None:
        pass  # the names tables are not this benchmark's (see docs/performance.md)

    def drop_all(self) -> None:
        pass

    def drop_hosts(self, hosts: set[str]) -> None:
        pass


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, hosts: int, profile: str | None,
                 connlog: ConnectionSink | None = None) -> None:
        self.switches = Switches()
        self.agents = Agents()
        index = DesiredIndex()

        def agents(rt: DatapathRuntime) -> Agents:
            self.agents.runtime = rt
            return self.agents

        self.runtime = DatapathRuntime(index, Roles(), switches=self.switches, agents=agents,
                                       connlog=connlog)
        self.inventory = Inventory(SqliteStore(":memory:"), self.runtime.on_change, index=index)
        self.core = self.runtime.core
        self.profile = profile
        self.floor = CounterFloor()  # what /metrics keeps across scrapes
        self.results: dict[str, Any] = {}
        self.hosts = [self.inventory.register_host(f"h{i}", f"198.18.{i // 250}.{i % 250 + 1}")
                      for i in range(hosts)]
        self.inventory.create_network("net", "10.0.0.0/8")
        self.port_no: dict[str, int] = {}
        for h in self.hosts:
            rt = self.runtime
            rt.handle(self.core.switch_connected, h.dpid)
            rt.handle(self.core.ports_described, h.dpid,
                      [PortInfo(OFPP_LOCAL, "br-dl", f"aa:00:00:00:{h.dpid >> 8:02x}:"
                                                     f"{h.dpid & 255:02x}")])
            rt.handle_timed(self.core.flows_dumped, h.dpid, [])
            snap = rt.snapshot(h.name)
            assert snap is not None
            rt.handle_timed(self.core.routes_acked, h.name, snap[0])

    def phase(self, name: str, fn: Callable[[], Any]) -> Any:
        prof = cProfile.Profile() if self.profile == name else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.enable()
        out = fn()
        if prof is not None:
            prof.disable()
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.results[f"{name}_s"] = round(took, 4)
        self.results[f"{name}_cpu_s"] = round(cpu, 4)
        print(f"{name:>14}: {took * 1000:10.1f} ms, CPU {cpu * 1000:10.1f} ms, "
              f"RSS {rss_mb():.0f} MB", flush=True)
        if prof is not None:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        return out

    def register(self, containers: int) -> None:
        hosts = self.hosts
        step = max(1, containers // 10)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(containers):
            h = hosts[i % len(hosts)]
            ep = self.inventory.add_endpoint(f"c{i}", "net", h.name)
            n = self.port_no[h.name] = self.port_no.get(h.name, 0) + 1
            self.runtime.handle(self.core.port_added, h.dpid, PortInfo(n, ep.port, ep.mac))
            if (i + 1) % step == 0:
                print(f"    {i + 1:>7} containers: {time.perf_counter() - t0:8.2f} s, "
                      f"CPU {time.process_time() - c0:8.2f} s", flush=True)

    def preload(self, containers: int) -> None:
        hosts = self.hosts
        eps = []
        with self.inventory.index.batch():
            for i in range(containers):
                h = hosts[i % len(hosts)]
                ip = IPv4(int(IPv4("10.0.0.2")) + i)
                ep = Endpoint(id=f"e{i}", name=f"c{i}", network="net", host=h.name, ip=ip,
                              mac=mac_for_ip(ip), port=f"dl{i:012d}")
                self.inventory.index.put_endpoint(ep)
                eps.append((h, ep))
        for h, ep in eps:
            n = self.port_no[h.name] = self.port_no.get(h.name, 0) + 1
            self.runtime.handle(self.core.port_added, h.dpid, PortInfo(n, ep.port, ep.mac))

    def connect(self, pairs: int) -> int:
        eps = self.inventory.endpoints()
        by_host: dict[str, list[Any]] = {}
        for ep in eps:
            by_host.setdefault(ep.host, []).append(ep)
        nhosts = len(self.hosts)
        done = 0
        for i in range(pairs):
            h = self.hosts[i % nhosts]
            mine = by_host[h.name]
            src = mine[(i // nhosts) % len(mine)]
            if i % 2 == 0:  # same host
                dst = mine[(i // nhosts + 1) % len(mine)]
            else:
                other = by_host[self.hosts[(i + 1) % nhosts].name]
                dst = other[(i // nhosts) % len(other)]
            pkt = PacketInfo(self.port_of(src), src.mac, src.ip, dst.ip, 1, b"x", table=2)
            self.runtime.handle_timed(self.core.packet_in, h.dpid, pkt)
            done += 1
        return done

    def port_of(self, ep: Any) -> int:
        sw = self.core.state.switches[self.inventory.host(ep.host).dpid]
        port = sw.port_no(ep.port)
        assert port is not None
        return port

    def dump_all(self) -> None:
        for h in self.hosts:
            self.runtime.handle_timed(self.core.flows_dumped, h.dpid,
                                      self.switches.dump(h.dpid))

    def tick(self) -> None:
        self.runtime.handle_timed(self.core.tick)

    def metrics(self) -> str:
        return render(ControllerCollector(self.runtime, Roles(), True,  # type: ignore[arg-type]
                                          floor=self.floor)).decode()

    def remove(self, count: int) -> int:
        """Remove `count` containers, each with connections, from the index and the
        core (what the inventory's change does; the store is not this phase's)."""
        live = {ip for pair in self.core.state.pairs for ip in pair}
        gone = [ep for ep in self.inventory.endpoints() if ep.ip in live][:count]
        for ep in gone:
            self.inventory.index.drop_endpoint(ep.id)
            self.runtime.handle_timed(self.core.endpoint_removed, ep)
        return len(gone)

    def expire(self, limit: int | None, batch: int) -> int:
        """A FlowRemoved for each connection flow (the first `limit` ones), switch by
        switch, as when a burst of connections idles out, `batch` notices at a time."""
        n = 0
        deltas = self.agents.deltas
        for h in self.hosts:
            cookies = [c for c, f in self.switches.flows.get(h.dpid, {}).items()
                       if f.idle_timeout]
            if limit is not None:
                cookies = cookies[: max(0, limit - n)]
            for at in range(0, len(cookies), batch):
                notices = [RemovedFlow(ck, 1) for ck in cookies[at:at + batch]]
                for notice in notices:
                    del self.switches.flows[h.dpid][notice.cookie]
                self.runtime.handle(self.core.flows_removed, h.dpid, notices)
            n += len(cookies)
        self.results["expire_deltas"] = self.agents.deltas - deltas
        return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--containers", type=int, default=10000)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--storm", type=int, default=None,
                    help="FlowRemoved notices in the storm (default: every connection flow)")
    ap.add_argument("--remove", type=int, default=100,
                    help="containers with connections removed before the storm")
    ap.add_argument("--removal-batch", type=int, default=128,
                    help="FlowRemoved notices per call of the core (1: one at a time)")
    ap.add_argument("--preload", action="store_true",
                    help="put the containers into the index at once instead of registering")
    ap.add_argument("--profile", default=None,
                    help="register, connect, dump, tick, metrics, remove or expire")
    args = ap.parse_args()
    b = Bench(args.hosts, args.profile)
    if args.preload:
        b.phase("preload", lambda: b.preload(args.containers))
    else:
        b.phase("register", lambda: b.register(args.containers))
    registered_rss = rss_mb()  # before any connection (the fake switches hold flows)
    b.phase("connect", lambda: b.connect(args.pairs))
    flows = sum(len(t) for t in b.switches.flows.values())
    print(f"{'flows':>14}: {flows} in the switches, RSS {rss_mb():.0f} MB")
    b.phase("dump", b.dump_all)
    b.phase("tick", b.tick)
    b.phase("metrics", b.metrics)
    b.phase("remove", lambda: b.remove(args.remove))
    expired = b.phase("expire", lambda: b.expire(args.storm, args.removal_batch))
    b.results["registered_rss_mb"] = round(registered_rss, 1)
    b.results.update(hosts=args.hosts, containers=args.containers, pairs=args.pairs,
                     flows=flows, expired=expired, rss_mb=round(rss_mb(), 1),
                     setups=b.core.state.counters.setups)
    print(json.dumps(b.results))


if __name__ == "__main__":
    main()
