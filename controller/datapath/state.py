"""What the pure core (`controller/datapath/core/`) keeps: its per-switch and
per-pair state, a cache of what the switches hold (rebuilt from their flow dumps
after a restart), the routes announced to agents, setups under way, counters, and
what it exchanges with other replicas."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from controller.datapath.events import PortInfo
from controller.datapath.messages import FlowAdd, Match, OFMessage, Output, SetField
from controller.datapath.needs import Export, ImportTable
from controller.datapath.tables import cookie

IPv4 = ipaddress.IPv4Address

FlowKey = tuple[int, int, Match]  # (table, priority, match)
Pair = frozenset[IPv4]
Grant = tuple[IPv4, int | None, int | None]  # (source address, ip proto, dst port)


@dataclass
class FlowRecord:
    flow: FlowAdd
    installed_at: float
    needs_route: tuple[IPv4, IPv4] | None  # (dst, via) this flow needs in the kernel
    pending: bool = False
    packet_count: int = 0
    last_active: float = 0.0

    @property
    def key(self) -> FlowKey:
        return (self.flow.table, self.flow.priority, self.flow.match)

    @property
    def src(self) -> IPv4:
        return IPv4(str(self.flow.match_dict()["ipv4_src"]))

    @property
    def dst(self) -> IPv4:
        return IPv4(str(self.flow.match_dict()["ipv4_dst"]))

    @property
    def in_port(self) -> int:
        return int(str(self.flow.match_dict()["in_port"]))

    @property
    def pair(self) -> Pair:
        return frozenset((self.src, self.dst))


@dataclass
class Switch:
    dpid: int
    host: str
    ports: dict[str, PortInfo] = field(default_factory=dict)
    local_mac: str | None = None
    synced: bool = False
    flows: dict[FlowKey, FlowRecord] = field(default_factory=dict)
    cookies: dict[int, FlowKey] = field(default_factory=dict)  # cookie -> key

    def port_no(self, name: str) -> int | None:
        info = self.ports.get(name)
        return info.port_no if info else None

    def port_name(self, port_no: int) -> str | None:
        for info in self.ports.values():
            if info.port_no == port_no:
                return info.name
        return None

    def put(self, rec: FlowRecord) -> None:
        old = self.flows.get(rec.key)
        if old is not None:
            self.cookies.pop(old.flow.cookie, None)
        self.flows[rec.key] = rec
        self.cookies[rec.flow.cookie] = rec.key

    def pop(self, key: FlowKey) -> FlowRecord:
        rec = self.flows.pop(key)
        self.cookies.pop(rec.flow.cookie, None)
        return rec


@dataclass(frozen=True)
class Leg:
    """One direction of a connection through one switch."""

    sw: Switch
    src: IPv4
    dst: IPv4
    in_port: int
    actions: tuple[SetField | Output, ...]
    needs_route: tuple[IPv4, IPv4] | None


@dataclass
class PairState:
    """How a pair is forwarded, and what its stateful flows were granted."""

    mode: Literal["open", "stateful"]
    mark: int  # ct_mark of its connections (stateful)
    grants: set[Grant] = field(default_factory=set)


@dataclass
class HostRoutes:
    announced: dict[IPv4, IPv4] = field(default_factory=dict)  # dst -> via
    unacked: dict[IPv4, int] = field(default_factory=dict)  # dst -> token in flight


@dataclass
class PendingSetup:
    pair: Pair
    waiting: set[int]
    flows: list[tuple[int, FlowKey]]  # (dpid, key) of the pending flow records
    packets: list[tuple[int, OFMessage]]
    started: float
    resubmit: bool = False  # packets go through the tables: every flow first


@dataclass
class TokenBucket:
    """`rate` tokens a second up to `burst`, one taken per event; O(1), time given."""

    rate: float
    burst: float
    tokens: float = -1.0  # full at the first event (-1: none yet)
    last: float = 0.0

    def take(self, now: float) -> bool:
        """Whether an event at `now` is within the budget (then it is counted)."""
        if self.tokens < 0:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# Why a PacketIn was dropped without a decision (daolinet_packet_ins_dropped_total).
DROP_SWITCH_BUDGET = "switch_budget"  # over its switch's budget (CoreState.switch_packet_in_*)
DROP_UNKNOWN_PORT = "unknown_port"  # from a port that is no endpoint (or no longer)


@dataclass
class Counters:
    packet_ins: int = 0
    setups: int = 0
    denials: int = 0
    failed_setups: int = 0
    denied_packets: int = 0  # packets dropped by deny flows (expired ones + live ones)
    spoofed_packets: int = 0  # packets dropped at a container port (anti-spoofing)
    setup_latency: list[float] = field(default_factory=list)
    packet_ins_dropped: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass
class CoreState:
    idle_timeout: int = 10
    deny_hold: int = 3
    # PacketIn budget of each container port (its meter): sustained rate and burst.
    packet_in_rate: int = 200
    packet_in_burst: int = 8
    # PacketIn budget of each switch, whatever its meters do (a switch without them, or
    # a rogue one): over it, PacketIns are dropped before any decision.
    switch_packet_in_rate: int = 1000
    switch_packet_in_burst: int = 500
    budgets: dict[int, TokenBucket] = field(default_factory=dict)  # dpid -> bucket
    switches: dict[int, Switch] = field(default_factory=dict)
    routes: dict[str, HostRoutes] = field(default_factory=dict)
    pending: dict[Pair, PendingSetup] = field(default_factory=dict)
    pairs: dict[Pair, PairState] = field(default_factory=dict)
    serial: int = 1
    counters: Counters = field(default_factory=Counters)
    host_counters: dict[str, Counters] = field(default_factory=dict)
    # packets counted by the live deny / anti-spoofing flows of each host (last dump)
    live_denied: dict[str, int] = field(default_factory=dict)
    live_spoofed: dict[str, int] = field(default_factory=dict)
    # deny flows sent and when they expire: a PacketIn that was already on its way
    # when the drop flow went out does not send it again
    denied: dict[tuple[int, Match], float] = field(default_factory=dict)
    # Masters spread over replicas (controller/datapath/needs.py): the hosts whose
    # switch another replica masters (empty with one controller, or one master of
    # all), the generation of our mastership (orders our exports), what we exported
    # to each foreign host, what other replicas' switches need on our hosts, and the
    # imports waiting for their routes' acks (shim ref -> tokens).
    foreign: set[str] = field(default_factory=set)
    generation: int = 0
    exports: dict[str, Export] = field(default_factory=dict)
    imports: dict[str, ImportTable] = field(default_factory=dict)
    import_waits: dict[int, set[int]] = field(default_factory=dict)

    def next_cookie(self, kind: int) -> int:
        self.serial += 1
        return cookie(kind, self.serial)

    def next_token(self) -> int:
        self.serial += 1
        return self.serial

    def next_mark(self) -> int:
        self.serial += 1
        return (self.serial & 0x7FFFFFFF) or 1

    def switch_of(self, host: str) -> Switch | None:
        for sw in self.switches.values():
            if sw.host == host:
                return sw
        return None

    def host_routes(self, host: str) -> HostRoutes:
        return self.routes.setdefault(host, HostRoutes())

    def pair_has_flows(self, pair: Pair) -> bool:
        return any(r.pair == pair for sw in self.switches.values() for r in sw.flows.values())

    def forget_idle_pairs(self) -> None:
        """Forget the pair state of pairs with no flow left and no setup under way."""
        live = {r.pair for sw in self.switches.values() for r in sw.flows.values()}
        for pair in [p for p in self.pairs if p not in live and p not in self.pending]:
            del self.pairs[pair]

    def within_budget(self, dpid: int, now: float) -> bool:
        """Whether a PacketIn of switch `dpid` at `now` is within its budget (a known
        switch's: the caller looked it up, so buckets are few)."""
        bucket = self.budgets.get(dpid)
        if bucket is None:
            bucket = self.budgets[dpid] = TokenBucket(self.switch_packet_in_rate,
                                                      self.switch_packet_in_burst)
        return bucket.take(now)

    def drop(self, host: str, reason: str) -> None:
        """Count a PacketIn dropped for `reason`, in total and for the host."""
        for c in (self.counters, self.host_counters.setdefault(host, Counters())):
            c.packet_ins_dropped[reason] = c.packet_ins_dropped.get(reason, 0) + 1

    def count(self, host: str, name: str, n: int = 1) -> None:
        """Add to a counter, in total and for the host."""
        for c in (self.counters, self.host_counters.setdefault(host, Counters())):
            setattr(c, name, getattr(c, name) + n)
