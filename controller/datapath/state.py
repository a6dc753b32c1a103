"""What the pure core (`controller/datapath/core/`) keeps: its per-switch and
per-pair state, a cache of what the switches hold (rebuilt from their flow dumps
after a restart), the routes announced to agents, setups under way, counters, and
what it exchanges with other replicas."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from controller.datapath.connections import ConnEvent
from controller.datapath.events import PortInfo
from controller.datapath.messages import FlowAdd, Match, OFMessage, Output, SetField
from controller.datapath.needs import Export, ImportTable
from controller.datapath.tables import cookie

IPv4 = ipaddress.IPv4Address

FlowKey = tuple[int, int, Match]  # (table, priority, match)
Pair = frozenset[IPv4]
Grant = tuple[IPv4, int | None, int | None]  # (source address, ip proto, dst port)


K = TypeVar("K")
V = TypeVar("V")


@functools.lru_cache(maxsize=1 << 16)
def parse_ip(text: str) -> IPv4:
    """An address of a flow's match (parsed once per address: the same few thousand
    addresses make every flow, and ipaddress parses in Python)."""
    return IPv4(text)


def discard(index: dict[K, dict[V, None]], key: K, member: V) -> None:
    """Take `member` out of `index[key]`, and the key with its last member: the
    indexes here keep no empty buckets."""
    members = index.get(key)
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[key]


@dataclass
class FlowRecord:
    """A connection flow the core installed or adopted.  Its match never changes,
    so what the hot paths read of it (key, addresses, in_port, pair) is derived
    once, at construction, not parsed again on every read."""

    flow: FlowAdd
    installed_at: float
    needs_route: tuple[IPv4, IPv4] | None  # (dst, via) this flow needs in the kernel
    pending: bool = False
    packet_count: int = 0
    last_active: float = 0.0
    key: FlowKey = field(init=False, repr=False, compare=False)
    src: IPv4 = field(init=False, repr=False, compare=False)
    dst: IPv4 = field(init=False, repr=False, compare=False)
    in_port: int = field(init=False, repr=False, compare=False)
    pair: Pair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = self.flow.match_dict()
        self.key = (self.flow.table, self.flow.priority, self.flow.match)
        self.src = parse_ip(str(m["ipv4_src"]))
        self.dst = parse_ip(str(m["ipv4_dst"]))
        self.in_port = int(str(m["in_port"]))
        self.pair = frozenset((self.src, self.dst))


class PairFlows:
    """How many flow records each pair has, over every switch of one core: kept by
    `Switch.put`/`pop`, so whether a pair still has a flow is one dict read (it was
    a scan of every flow of every switch, on every FlowRemoved and dump)."""

    def __init__(self) -> None:
        self._count: dict[Pair, int] = {}
        # address -> its pairs with flows, in the order they got their first one
        # (removing a container finds its connections without a scan of every flow)
        self._by_ip: dict[IPv4, dict[Pair, None]] = {}

    def add(self, pair: Pair, n: int = 1) -> None:
        had = self._count.get(pair, 0)
        self._count[pair] = had + n
        if not had:
            for ip in pair:
                self._by_ip.setdefault(ip, {})[pair] = None

    def remove(self, pair: Pair, n: int = 1) -> None:
        left = self._count.get(pair, 0) - n
        if left > 0:
            self._count[pair] = left
        elif self._count.pop(pair, None) is not None:
            for ip in pair:
                discard(self._by_ip, ip, pair)

    def pairs_of(self, ip: IPv4) -> list[Pair]:
        """The pairs of `ip` with flows (a copy: the caller may remove them)."""
        return list(self._by_ip.get(ip, ()))

    def __contains__(self, pair: object) -> bool:
        return pair in self._count

    def pairs(self) -> list[Pair]:
        return list(self._count)

    def __len__(self) -> int:
        return len(self._count)


@dataclass
class Switch:
    dpid: int
    host: str
    # shared by the switches of one core (CoreState.live): counts their flows per pair
    live: PairFlows = field(default_factory=PairFlows, repr=False, compare=False)
    ports: dict[str, PortInfo] = field(default_factory=dict)  # add_port/drop_port
    local_mac: str | None = None
    synced: bool = False
    flows: dict[FlowKey, FlowRecord] = field(default_factory=dict)  # put/pop
    cookies: dict[int, FlowKey] = field(default_factory=dict)  # cookie -> key
    by_pair: dict[Pair, set[FlowKey]] = field(default_factory=dict)  # pair -> its flows here
    port_names: dict[int, str] = field(default_factory=dict)  # port number -> name
    # the kernel routes its flows need: (dst, via) -> how many flows need it
    route_needs: dict[tuple[IPv4, IPv4], int] = field(default_factory=dict)
    # The periodic flow dump (controller/datapath/core/reconcile.py, `tick`): when
    # this switch's dump was last asked for, and whether its flow cache is suspect
    # (a packet missed a flow we believe it holds), which moves it to the front.
    dump_asked: float = float("-inf")
    suspect: bool = False

    def port_no(self, name: str) -> int | None:
        info = self.ports.get(name)
        return info.port_no if info else None

    def port_name(self, port_no: int) -> str | None:
        return self.port_names.get(port_no)

    def add_port(self, port: PortInfo) -> None:
        self.drop_port(port.name)
        self.ports[port.name] = port
        self.port_names[port.port_no] = port.name

    def drop_port(self, name: str) -> None:
        old = self.ports.pop(name, None)
        if old is not None and self.port_names.get(old.port_no) == name:
            del self.port_names[old.port_no]

    def clear_ports(self) -> None:
        self.ports, self.port_names = {}, {}

    def put(self, rec: FlowRecord) -> None:
        if rec.key in self.flows:
            self.pop(rec.key)
        self.flows[rec.key] = rec
        self.cookies[rec.flow.cookie] = rec.key
        self.by_pair.setdefault(rec.pair, set()).add(rec.key)
        self.live.add(rec.pair)
        if rec.needs_route is not None:
            self.route_needs[rec.needs_route] = self.route_needs.get(rec.needs_route, 0) + 1

    def pop(self, key: FlowKey) -> FlowRecord:
        rec = self.flows.pop(key)
        self.cookies.pop(rec.flow.cookie, None)
        keys = self.by_pair.get(rec.pair)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.by_pair[rec.pair]
        self.live.remove(rec.pair)
        if rec.needs_route is not None:
            left = self.route_needs.get(rec.needs_route, 0) - 1
            if left > 0:
                self.route_needs[rec.needs_route] = left
            else:
                self.route_needs.pop(rec.needs_route, None)
        return rec

    def pair_keys(self, pair: Pair) -> list[FlowKey]:
        """The keys of `pair`'s flows on this switch."""
        return list(self.by_pair.get(pair, ()))

    def forget_flows(self) -> None:
        """Drop every record (the switch leaves this core): un-count its pairs."""
        for pair, keys in self.by_pair.items():
            self.live.remove(pair, len(keys))
        self.flows, self.cookies, self.by_pair, self.route_needs = {}, {}, {}, {}


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
    # The connection log (controller/datapath/connections.py): the decision that set
    # the pair up, and what its removed flows passed, for its expiry or revocation.
    opened: ConnEvent | None = None
    packets: int = 0
    bytes: int = 0
    duration: float = 0.0


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


# Upper bounds (seconds) of the setup-latency histogram's buckets (GET /metrics).
SETUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


@dataclass
class LatencyHistogram:
    """Setup latencies counted into SETUP_BUCKETS since the start (the last count is
    +Inf): counts only grow, so Prometheus' rate() and histogram_quantile() hold,
    in O(log buckets) per setup and constant memory."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(SETUP_BUCKETS) + 1))
    total: float = 0.0  # sum of the latencies, seconds

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(SETUP_BUCKETS, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Per bucket, the latencies at most its bound (the last: all of them)."""
        return list(itertools.accumulate(self.counts))

    def copy(self) -> LatencyHistogram:
        return LatencyHistogram(list(self.counts), self.total)


@dataclass
class Counters:
    packet_ins: int = 0
    setups: int = 0
    denials: int = 0
    failed_setups: int = 0
    denied_packets: int = 0  # packets dropped by deny flows (expired ones + live ones)
    spoofed_packets: int = 0  # packets dropped at a container port (anti-spoofing)
    setup_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    packet_ins_dropped: dict[str, int] = field(default_factory=dict)  # reason -> count


# Drop flows whose denial the core remembers for the connection log (CoreState.deny_events).
DENY_EVENTS_MAX = 20_000


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
    # Switches whose flows the periodic tick dumps, at most (the oldest dumps first):
    # with up to this many switches each is dumped every tick, as it always was; with
    # more, the dumps are spread over ticks (docs/architecture.md, "Reconciliation").
    dumps_per_tick: int = 8
    switches: dict[int, Switch] = field(default_factory=dict)  # add_switch/drop_switch
    dpid_of: dict[str, int] = field(default_factory=dict)  # host -> its switch's dpid
    live: PairFlows = field(default_factory=PairFlows)  # flows per pair, all switches
    routes: dict[str, HostRoutes] = field(default_factory=dict)
    pending: dict[Pair, PendingSetup] = field(default_factory=dict)
    # token -> the pending setups waiting for it (an answer finds its setups without
    # a scan of every setup under way); kept by wait/unwait, checked against `pending`
    waiting_on: dict[int, dict[Pair, None]] = field(default_factory=dict)
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
    # the denial each live drop flow stands for (cookie -> event), so the packets it
    # dropped join that denial's entry in the connection log when it goes; bounded
    # (`note_deny_flow`): a cookie forgotten only loses that count
    deny_events: dict[int, ConnEvent] = field(default_factory=dict)
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

    def wait(self, pair: Pair, tokens: set[int]) -> None:
        """`pair`'s pending setup waits for `tokens` too."""
        for t in tokens:
            self.waiting_on.setdefault(t, {})[pair] = None

    def unwait(self, pair: Pair, tokens: set[int]) -> None:
        """`pair`'s pending setup no longer waits for `tokens`."""
        for t in tokens:
            discard(self.waiting_on, t, pair)

    def note_deny_flow(self, flow_cookie: int, event: ConnEvent) -> None:
        """Remember which denial drop flow `flow_cookie` stands for (bounded: past
        DENY_EVENTS_MAX the older half is forgotten, amortised O(1))."""
        if len(self.deny_events) >= DENY_EVENTS_MAX:
            for old in list(itertools.islice(self.deny_events, DENY_EVENTS_MAX // 2)):
                del self.deny_events[old]
        self.deny_events[flow_cookie] = event

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
        dpid = self.dpid_of.get(host)
        return self.switches.get(dpid) if dpid is not None else None

    def add_switch(self, dpid: int, host: str) -> Switch:
        """A switch this core now masters (replacing any record of it)."""
        self.drop_switch(dpid)
        sw = self.switches[dpid] = Switch(dpid=dpid, host=host, live=self.live)
        self.dpid_of[host] = dpid
        return sw

    def drop_switch(self, dpid: int) -> Switch | None:
        """Forget a switch (gone, or mastered elsewhere) and its flows."""
        sw = self.switches.pop(dpid, None)
        if sw is not None:
            sw.forget_flows()
            if self.dpid_of.get(sw.host) == dpid:
                del self.dpid_of[sw.host]
        return sw

    def host_routes(self, host: str) -> HostRoutes:
        return self.routes.setdefault(host, HostRoutes())

    def pair_has_flows(self, pair: Pair) -> bool:
        return pair in self.live

    def forget_if_idle(self, pair: Pair) -> None:
        """Forget `pair`'s state if it has no flow left and no setup under way."""
        if pair not in self.live and pair not in self.pending:
            self.pairs.pop(pair, None)

    def forget_idle_pairs(self) -> None:
        """Forget the pair state of pairs with no flow left and no setup under way
        (O(pairs); after a change of many flows at once: a dump, a hand-over)."""
        for pair in [p for p in self.pairs if p not in self.live and p not in self.pending]:
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
