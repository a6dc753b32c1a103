"""The connection log's memory: a ring of entries bounded by count and age, the
summaries of denied floods, the queries of GET /api/v1/connections, and the queue
of lines the JSON-lines writer takes.

Recording is O(1) per event (a dict hit for a denial, an append otherwise; the
age bound pops from the old end, amortised), under a lock of its own that is held
for nothing else than that: the runtime records after the core's lock is
released, from whichever thread ran the core (docs/performance.md, "Connection log").
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from controller.datapath.connections import ConnEvent, Identity
from controller.desired.policy import PROTO_NAMES

# Defaults of the controller's options (controller/settings.py, connection_log_*).
DEFAULT_ENTRIES = 100_000
DEFAULT_AGE = 86_400.0  # seconds
DEFAULT_INTERVAL = 10.0  # seconds a denied pair's entry keeps counting after its last packet
MAX_PAGE = 1000  # entries one query answers at most (GET /connections?limit=)
# Lines waiting for the writer, at most: past it the oldest are dropped (counted),
# so a stuck disk costs lines, never the controller's memory.
WRITE_QUEUE = 100_000
# Open flood summaries kept at most before the closed ones are swept (amortised).
OPEN_MAX = 10_000

SummaryKey = tuple[object, object, int, int | None, str]  # src, dst, proto, dport, observer


class Entry:
    """One line of the log: the core's event, when it was recorded, and for a
    denial how many packets it stands for until its interval closes."""

    __slots__ = ("count", "event", "last", "seq", "time")

    def __init__(self, seq: int, at: float, event: ConnEvent) -> None:
        self.seq = seq
        self.time = at
        self.last = at
        self.count = event.count
        self.event = event

    def to_dict(self, replica: str) -> dict[str, Any]:
        e = self.event
        return {
            "seq": self.seq,
            "replica": replica,
            "time": self.time,
            "last": self.last,
            "event": e.event,
            "verdict": e.verdict,
            "src": _end(e.src, e.src_ip, e.sport),
            "dst": _end(e.dst, e.dst_ip, e.dport),
            # 0: a connection adopted from a pair flow, which matches every protocol
            "proto": PROTO_NAMES.get(e.proto, "any" if e.proto == 0 else str(e.proto)),
            "reason": e.reason,
            "kind": e.kind,
            "rule_id": e.rule_id,
            "path": e.path,
            "observer": e.observer,
            "count": self.count,
            "duration": e.duration,
            "packets": e.packets,
            "bytes": e.bytes,
            "audit": [
                {"kind": a.kind, "id": a.id, "would": a.would, "reason": a.reason}
                for a in e.audit
            ],
            "ended_by": e.ended_by,
        }


def _end(ident: Identity | None, ip: object, port: int | None) -> dict[str, Any]:
    container, network, host, site = ident if ident is not None else (None, None, None, None)
    return {"container": container, "network": network, "host": host, "site": site,
            "ip": str(ip), "port": port}


@dataclass(frozen=True)
class Filters:
    """What GET /connections selects; every field given must match."""

    container: str | None = None  # either end's container
    network: str | None = None  # either end's network
    host: str | None = None  # either end's host, or the host that saw it
    verdict: str | None = None  # "allow" | "deny"
    event: str | None = None  # "allowed" | "denied" | "revoked" | "expired"
    # a firewall rule id (or its first characters) that decided, or that was audited;
    # a pair policy audited ("a|b")
    rule: str | None = None
    kind: str | None = None  # what decided: pair, firewall, network, group, default
    since: float | None = None  # time >= since (seconds since the epoch)
    until: float | None = None  # time < until

    def match(self, entry: Entry) -> bool:
        e = entry.event
        if self.since is not None and entry.time < self.since:
            return False
        if self.until is not None and entry.time >= self.until:
            return False
        if self.verdict is not None and e.verdict != self.verdict:
            return False
        if self.event is not None and e.event != self.event:
            return False
        if self.kind is not None and e.kind != self.kind:
            return False
        if self.rule is not None and not _names_rule(e, self.rule):
            return False
        return (
            _either(self.container, 0, e.src, e.dst)
            and _either(self.network, 1, e.src, e.dst)
            and (_either(self.host, 2, e.src, e.dst) or self.host == e.observer)
        )


def _names_rule(e: ConnEvent, rule: str) -> bool:
    return (e.rule_id or "").startswith(rule) or any(a.id.startswith(rule) for a in e.audit)


def _either(want: str | None, i: int, a: Identity | None, b: Identity | None) -> bool:
    return want is None or (a is not None and a[i] == want) or (b is not None and b[i] == want)


@dataclass(frozen=True)
class Page:
    entries: list[Entry]  # oldest first
    more: bool  # more entries match beyond this page (older; or newer after `after`)


class ConnectionLog:
    """The ring and the flood summaries.  `clock`: wall-clock seconds (a test's own).

    Retention: at most `max_entries` entries, none older than `max_age` seconds.
    A denial of the same (source, destination, protocol, destination port, switch)
    within `interval` seconds of that pair's last denied packet adds to its entry's
    count instead of making a new one; the writer gets the entry when it closes.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_ENTRIES,
        max_age: float = DEFAULT_AGE,
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.time,
        writing: bool = False,
    ) -> None:
        self.max_age = max_age
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: deque[Entry] = deque(maxlen=max_entries)
        self._open: dict[SummaryKey, Entry] = {}
        self._seq = 0
        self._last_time = 0.0
        # lines for the writer (None: no writer), and how many it lost to a full queue
        self._out: deque[Entry] | None = deque() if writing else None
        self.write_dropped = 0
        # entries recorded since the start, by (event, verdict): /metrics
        self._recorded: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._ring)

    # recording (the runtime, after each core call that decided something) ----------
    def record(self, events: Iterable[ConnEvent]) -> None:
        with self._lock:
            now = self._clock()
            at = round(max(now, self._last_time + 1e-6), 6)  # unique and increasing
            for e in events:
                if e.event == "denied":
                    key: SummaryKey = (e.src_ip, e.dst_ip, e.proto, e.dport, e.observer)
                    have = self._open.get(key)
                    if have is not None and now - have.last <= self.interval:
                        have.count += e.count
                        have.last = now
                        continue
                    entry = self._append(e, at)
                    if have is not None:
                        self._queue(have)  # its interval closed: to the file
                    self._open[key] = entry
                    if len(self._open) > OPEN_MAX:
                        self._sweep(now)
                        self._shed()
                else:
                    self._queue(self._append(e, at))
                at = round(at + 1e-6, 6)
            self._last_time = at
            self._expire(now)

    def _append(self, e: ConnEvent, at: float) -> Entry:
        self._seq += 1
        key = (e.event, e.verdict)
        self._recorded[key] = self._recorded.get(key, 0) + 1
        entry = Entry(self._seq, at, e)
        self._ring.append(entry)
        return entry

    def recorded(self) -> dict[tuple[str, str], int]:
        """Entries recorded since the start (expired ones too), by (event, verdict)."""
        with self._lock:
            return dict(self._recorded)

    def _queue(self, entry: Entry) -> None:
        out = self._out
        if out is None:
            return
        if len(out) >= WRITE_QUEUE:
            out.popleft()
            self.write_dropped += 1
        out.append(entry)

    def _sweep(self, now: float, everything: bool = False) -> None:
        """Close the summaries whose interval ended (all of them at the end)."""
        for key, entry in list(self._open.items()):
            if everything or now - entry.last > self.interval:
                del self._open[key]
                self._queue(entry)

    def _shed(self) -> None:
        """Close the oldest open summaries until a quarter of the bound is free
        (many pairs denied at once), so the next sweeps are amortised O(1)."""
        extra = len(self._open) - OPEN_MAX * 3 // 4
        if extra <= 0:
            return
        for key in list(itertools.islice(self._open, extra)):
            self._queue(self._open.pop(key))

    def _expire(self, now: float) -> None:
        ring, horizon = self._ring, now - self.max_age
        while ring and ring[0].time < horizon:
            ring.popleft()

    # the writer (controller/connlog/writer.py) ----------------------------------------
    def drain(self, final: bool = False) -> list[Entry]:
        """The entries to write now: those recorded since the last call and the
        summaries that closed (`final`: every summary, closed or not)."""
        with self._lock:
            self._sweep(self._clock(), everything=final)
            out = self._out
            if not out:
                return []
            batch = list(out)
            out.clear()
            return batch

    # queries (GET /api/v1/connections) --------------------------------------------
    def query(
        self,
        filters: Filters,
        limit: int,
        before: float | None = None,
        after: float | None = None,
    ) -> Page:
        """Matching entries, oldest first, at most `limit`: the newest ones before
        `before` (paging back), or with `after` the oldest ones after it (following).
        Entries whose interval of summary is still open carry their count so far."""
        with self._lock:
            self._expire(self._clock())
            ring = list(self._ring)  # a C-speed copy; the scan runs without the lock
        out: list[Entry] = []
        more = False
        if after is not None:
            newer: list[Entry] = []
            for entry in reversed(ring):  # newest first: stop at the cursor
                if entry.time <= after:
                    break
                if filters.match(entry):
                    newer.append(entry)
            newer.reverse()
            return Page(newer[:limit], len(newer) > limit)
        for entry in reversed(ring):
            if before is not None and entry.time >= before:
                continue
            if filters.since is not None and entry.time < filters.since:
                break
            if filters.match(entry):
                if len(out) == limit:
                    more = True
                    break
                out.append(entry)
        out.reverse()
        return Page(out, more)
