"""Which setups are done: what the switches receive, matched to the PacketIns sent.

A setup of the pair (a, b) started with a PacketIn on a's switch is done when
every switch it needs got its flows for that pair (FlowMods whose match names both
addresses) and a's switch got the PacketOut of the first packet.  Its latency is
the controller-side first-packet latency: PacketIn written to the last of those
received.  The tracker also knows which pairs have flows somewhere (`busy`), so a
workload only starts fresh setups.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.simnet import ofwire as w

PairKey = tuple[int, int]
KIND_DENY = 0xDD  # the controller's cookie kind of a drop flow (datapath/tables.py)


def pair_key(a: int, b: int) -> PairKey:
    return (a, b) if a < b else (b, a)


@dataclass(slots=True)
class Pending:
    host: int  # index of the source host (the workload refills per host)
    src_dpid: int
    need: dict[int, int]  # dpid -> flows still to arrive
    started: float
    out: bool = False


@dataclass
class Tally:
    done: list[tuple[float, float]] = field(default_factory=list)  # (when, latency)
    lost: int = 0
    denied: int = 0


# What a packet sent to the source host's kernel takes to reach the other host's
# bridge (the simulated underlay): only then is a missing flow there a PacketIn.
UNDERLAY_S = 0.05
Forward = Callable[[int, bytes], None]  # (dpid, frame): the frame arrives from LOCAL


class Tracker:
    def __init__(self, timeout: float = 5.0, forward: Forward | None = None) -> None:
        """`forward`: emulate the underlay (with replicas, the other switch's master
        sets up its half when the first packet reaches that switch from its kernel)."""
        self.timeout = timeout
        self.forward = forward
        self.pending: dict[PairKey, Pending] = {}
        self.live: dict[PairKey, int] = {}
        self.tally = Tally()
        self.on_finished: Callable[[Pending, bool], None] = lambda p, ok: None

    def reset(self, on_finished: Callable[[Pending, bool], None]) -> Tally:
        """Start a new tally (pending setups of an earlier phase still count in it)."""
        self.tally = Tally()
        self.on_finished = on_finished
        return self.tally

    def busy(self, key: PairKey) -> bool:
        return key in self.pending or key in self.live

    def started(self, key: PairKey, host: int, src_dpid: int, need: dict[int, int]) -> None:
        self.pending[key] = Pending(host, src_dpid, dict(need), time.monotonic())

    # Sink ------------------------------------------------------------------------------
    def flow_added(self, dpid: int, mod: w.FlowMod) -> None:
        pair = w.ipv4_pair(mod.fields)
        if pair is None:
            return
        key = pair_key(*pair)
        self.live[key] = self.live.get(key, 0) + 1
        p = self.pending.get(key)
        if p is None:
            return
        if mod.cookie >> 56 == KIND_DENY:
            self.tally.denied += 1
            del self.pending[key]
            self.on_finished(p, False)
            return
        left = p.need.get(dpid)
        if left is not None:
            if left <= 1:
                del p.need[dpid]
            else:
                p.need[dpid] = left - 1
            self._check(key, p)

    def packet_out(self, dpid: int, data: bytes) -> None:
        pair = w.frame_pair(data)
        if pair is None:
            return
        key = pair_key(*pair)
        p = self.pending.get(key)
        if p is not None and dpid == p.src_dpid:
            p.out = True
            self._check(key, p)
            if self.forward is not None:
                for other in p.need:
                    if other != dpid:
                        asyncio.get_running_loop().call_later(
                            UNDERLAY_S, self._arrive, key, other, data)

    def _arrive(self, key: PairKey, dpid: int, data: bytes) -> None:
        """The first packet reaches `dpid` from its kernel: a PacketIn there if that
        switch still has no flow of the pair."""
        p = self.pending.get(key)
        if p is not None and p.need.get(dpid, 0) >= 2 and self.forward is not None:
            self.forward(dpid, data)

    def flow_gone(self, dpid: int, fields: tuple[bytes, ...]) -> None:
        pair = w.ipv4_pair(fields)
        if pair is None:
            return
        key = pair_key(*pair)
        n = self.live.get(key, 0) - 1
        if n > 0:
            self.live[key] = n
        else:
            self.live.pop(key, None)

    def switch_lost(self, dpid: int) -> None:
        """A connection of switch `dpid` ended: the setups it was part of are lost
        (the controller forgot them), so the workload goes on with new ones."""
        for key, p in list(self.pending.items()):
            if p.src_dpid == dpid or dpid in p.need:
                del self.pending[key]
                self.tally.lost += 1
                self.on_finished(p, False)

    def _check(self, key: PairKey, p: Pending) -> None:
        if p.out and not p.need:
            now = time.monotonic()
            del self.pending[key]
            self.tally.done.append((now, now - p.started))
            self.on_finished(p, True)

    def expire(self) -> None:
        """Count as lost the setups older than `timeout` (and let the workload go on)."""
        limit = time.monotonic() - self.timeout
        for key, p in list(self.pending.items()):
            if p.started < limit:
                del self.pending[key]
                self.tally.lost += 1
                self.on_finished(p, False)
