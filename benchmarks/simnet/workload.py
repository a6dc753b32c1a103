"""The workload: fresh allowed pairs (same host, cross-host, cross-site), paced.

`Fabric` is what the simulator knows of the registered containers; `Workload`
sends each new pair's first packet as a PacketIn on the source's switch, either
closed-loop (`outstanding` setups in flight per switch, the next one as soon as
one finishes: as fast as answered) or open-loop at `rate` setups per second.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.simnet import ofwire as w
from benchmarks.simnet.switch import SimSwitch
from benchmarks.simnet.tracker import Pending, Tally, Tracker, pair_key

T_STATEFUL = 2  # the table the controller's miss flows send PacketIns from
KINDS = ("same-host", "cross-host", "cross-site")
PROBE_S = 2.0  # a resync probe unanswered for this long is followed by another
MAX_PROBES = 5  # resync probes in flight per switch
Expect = Callable[[int, int], dict[int, int]]  # (src dpid, dst dpid) -> flows per dpid


@dataclass(frozen=True)
class Container:
    host: int  # index into Fabric.hosts
    ip: int
    mac: bytes
    port_no: int


@dataclass
class Fabric:
    hosts: list[str]
    sites: list[int]  # site index of each host
    dpids: list[int]
    containers: list[list[Container]]  # per host

    def kinds(self) -> list[str]:
        """The kinds of pair this fabric has."""
        per_site = collections.Counter(self.sites)
        out = ["same-host"]
        if any(n > 1 for n in per_site.values()):
            out.append("cross-host")
        if len(per_site) > 1:
            out.append("cross-site")
        return out


def daolinet_expect(src: int, dst: int) -> dict[int, int]:
    """Open pair flows: both directions on each switch the pair crosses."""
    return {src: 2} if src == dst else {src: 2, dst: 2}


def baseline_expect(src: int, dst: int) -> dict[int, int]:
    return {src: 1}


@dataclass
class PhaseResult:
    seconds: float
    setups: int
    per_s: float
    series: list[int]
    p50_ms: float
    p99_ms: float
    lost: int
    denied: int
    kinds: dict[str, int]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Workload:
    def __init__(self, fabric: Fabric, switches: list[SimSwitch], tracker: Tracker,
                 expect: Expect, *, fresh: bool = True, seed: int = 1) -> None:
        """`fresh`: only pairs with no flows anywhere (daolinet's first packets); the
        baseline app keeps no state, so any pair not in flight will do for it."""
        self.fabric = fabric
        self.fresh = fresh
        self.switches = switches
        self.tracker = tracker
        self.expect = expect
        self.rng = random.Random(seed)
        self.kinds = fabric.kinds()
        self.by_site: dict[int, list[int]] = {}
        for i, s in enumerate(fabric.sites):
            self.by_site.setdefault(s, []).append(i)
        self.sent_kinds: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._sport = 1024
        self.in_flight = [0] * len(switches)

    def _peer_host(self, h: int, kind: str) -> int:
        site = self.fabric.sites[h]
        if kind == "same-host":
            return h
        if kind == "cross-host":
            return self.rng.choice([x for x in self.by_site[site] if x != h] or [h])
        others = [s for s in self.by_site if s != site]
        return self.rng.choice(self.by_site[self.rng.choice(others)]) if others else h

    def pick(self, h: int, kind: str | None = None) -> tuple[Container, Container, str] | None:
        """A fresh pair from host `h` (no flows, not being set up), or None."""
        mine = self.fabric.containers[h]
        for _ in range(20):
            kind = kind or self.rng.choice(self.kinds)
            peers = self.fabric.containers[self._peer_host(h, kind)]
            a, b = self.rng.choice(mine), self.rng.choice(peers)
            key = pair_key(a.ip, b.ip)
            busy = self.tracker.busy(key) if self.fresh else key in self.tracker.pending
            if a.ip != b.ip and not busy:
                return a, b, kind
        return None

    def start_one(self, h: int, kind: str | None = None) -> bool:
        sw = self.switches[h]
        picked = self.pick(h, kind)
        if picked is None or not sw.connected:
            return False
        a, b, kind = picked
        self._sport = self._sport % 60000 + 1
        frame = w.udp_frame(a.mac, b"\x02\xda\x00\x00\x00\x01", a.ip, b.ip, self._sport)
        src, dst = self.fabric.dpids[h], self.fabric.dpids[b.host]
        self.tracker.started(pair_key(a.ip, b.ip), h, src, self.expect(src, dst))
        self.in_flight[h] += 1
        self.sent_kinds[kind] += 1
        return sw.packet_in(a.port_no, T_STATEFUL, frame)

    async def run(self, seconds: float, outstanding: int, rate: float) -> PhaseResult:
        """Setups for `seconds`: closed loop (rate 0) or open loop at `rate` per second."""
        running = True

        def finished(p: Pending, ok: bool) -> None:
            self.in_flight[p.host] -= 1
            if running and rate <= 0:
                self.start_one(p.host)

        tally = self.tracker.reset(finished)
        self.sent_kinds = dict.fromkeys(KINDS, 0)
        t0 = time.monotonic()
        sent = turn = 0
        while (now := time.monotonic()) < t0 + seconds:
            if rate > 0:
                due = int((now - t0) * rate) - sent
                for _ in range(due):
                    self.start_one(turn % len(self.switches))
                    turn += 1
                sent += max(due, 0)
            else:  # (re)fill: at the start, and switches whose setups could not start
                for h in range(len(self.switches)):
                    while self.in_flight[h] < outstanding and self.start_one(h):
                        pass
            self.tracker.expire()
            await asyncio.sleep(0.005 if rate > 0 else 0.25)
        running = False
        return self._result(tally, t0, seconds)

    def _result(self, tally: Tally, t0: float, seconds: float) -> PhaseResult:
        inside = [(t, lat) for t, lat in tally.done if t <= t0 + seconds]
        series = [0] * max(1, int(seconds + 0.999))
        for t, _ in inside:
            series[min(len(series) - 1, int(t - t0))] += 1
        lat = [lat * 1000 for _, lat in inside]
        return PhaseResult(
            seconds=seconds, setups=len(inside), per_s=round(len(inside) / seconds, 1),
            series=series, p50_ms=round(pct(lat, 0.5), 2), p99_ms=round(pct(lat, 0.99), 2),
            lost=tally.lost, denied=tally.denied, kinds=dict(self.sent_kinds),
        )

    async def resync(self, since: float, timeout: float) -> dict[int, float]:
        """Probe every switch with same-host setups, once the controller asked it for
        its flows after it reconnected, until each completed one: the seconds from
        `since` to each host's first setup (hosts missing: none in time).

        A probe unanswered after PROBE_S is followed by another (the controller
        drops PacketIns of a switch whose ports it does not know yet), at most
        MAX_PROBES in flight per switch; an earlier probe answered late counts too.
        """
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        # Setups still in flight were sent to the controller that is gone.
        self.tracker.pending.clear()
        self.in_flight = [0] * len(self.switches)

        def finished(p: Pending, ok: bool) -> None:
            self.in_flight[p.host] -= 1
            if ok and p.host not in first:
                first[p.host] = time.monotonic() - since

        self.tracker.reset(finished)
        old_timeout, self.tracker.timeout = self.tracker.timeout, timeout
        try:
            while len(first) < len(self.switches) and (now := time.monotonic()) - since < timeout:
                for h, sw in enumerate(self.switches):
                    if (h not in first and sw.stats.synced_at
                            and self.in_flight[h] < MAX_PROBES
                            and now - last.get(h, 0.0) >= PROBE_S
                            and self.start_one(h, "same-host")):
                        last[h] = now
                await asyncio.sleep(0.05)
        finally:
            self.tracker.timeout = old_timeout
        return first
