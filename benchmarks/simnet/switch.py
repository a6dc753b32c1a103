"""One simulated br-dl: a flow table and an OpenFlow 1.3 connection to each controller.

It answers what OVS answers (hello, features, get-config, role, barrier, echo,
port descriptions, flow dumps of what was installed), keeps the flows it is sent
(add, modify, delete strict or by subset of match and cookie mask), expires a flow
`idle_timeout` seconds after it was installed (no traffic passes here, so every
flow is idle from the start) with a FlowRemoved when asked, and reconnects after
the controller goes away, keeping its flows as OVS does.  With several replicas
each connection has its own role: a slave's writes are refused, only the master
(or an equal) hears PacketIns and FlowRemoved.  What it receives is
reported to a `Sink` (the tracker), which counts setups.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from benchmarks.simnet import ofwire as w

log = logging.getLogger(__name__)

RECONNECT_S = 0.2


class Sink(Protocol):
    def flow_added(self, dpid: int, mod: w.FlowMod) -> None: ...
    def packet_out(self, dpid: int, data: bytes) -> None: ...
    def flow_gone(self, dpid: int, fields: tuple[bytes, ...]) -> None: ...
    def switch_lost(self, dpid: int) -> None: ...


@dataclass(slots=True)
class Flow:
    table: int
    priority: int
    cookie: int
    idle: int
    hard: int
    flags: int
    match: bytes
    fields: tuple[bytes, ...]
    instructions: bytes
    installed: float
    expiry: asyncio.TimerHandle | None = None


FlowKey = tuple[int, int, tuple[bytes, ...]]


@dataclass
class PortDesc:
    port_no: int
    name: str
    mac: str


@dataclass
class SwitchStats:
    flow_mods: int = 0
    packet_outs: int = 0
    dumps: int = 0
    dumped_entries: int = 0
    flow_removed: int = 0
    refused: int = 0  # writes from a slave connection
    disconnects: int = 0  # connections the controller (or the network) ended
    synced_at: float | None = None  # first flow dump asked by a master since it connected


ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE = 1, 2, 3


class Channel(asyncio.Protocol):
    """The switch's connection to one controller (one per replica, as OVS keeps one
    per target), with its own role; it reconnects after the controller goes away."""

    def __init__(self, switch: SimSwitch, target: tuple[str, int],
                 tls: ssl.SSLContext | None) -> None:
        self.switch = switch
        self.target = target
        self.tls = tls
        self.role = ROLE_EQUAL
        self.generation = 0
        self.transport: asyncio.Transport | None = None
        self.connects = 0
        self._buf = bytearray()
        self._closing = False

    async def connect(self) -> None:
        """Connect (again and again until it works or `close`)."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await loop.create_connection(lambda: self, *self.target, ssl=self.tls)
                return
            except OSError:
                await asyncio.sleep(RECONNECT_S)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    @property
    def up(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    @property
    def hears(self) -> bool:
        """Whether asynchronous messages (PacketIn, FlowRemoved) go to it."""
        return self.up and self.role != ROLE_SLAVE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._buf.clear()
        self.role = ROLE_EQUAL
        self.connects += 1
        self.switch.stats.synced_at = None
        transport.write(w.hello())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self._closing:
            self.switch.stats.disconnects += 1
            self.switch.sink.switch_lost(self.switch.dpid)
            asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        await asyncio.sleep(RECONNECT_S)
        await self.connect()

    def send(self, data: bytes) -> bool:
        if not self.up:
            return False
        assert self.transport is not None
        self.transport.write(data)
        return True

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        off = 0
        n = len(buf)
        while n - off >= 8:
            length = (buf[off + 2] << 8) | buf[off + 3]
            if length < 8:
                assert self.transport is not None
                self.transport.close()
                return
            if n - off < length:
                break
            self._handle(bytes(buf[off:off + length]))
            off += length
        del buf[:off]

    def _handle(self, msg: bytes) -> None:
        kind = msg[1]
        xid = int.from_bytes(msg[4:8])
        sw = self.switch
        if kind in (w.FLOW_MOD, w.PACKET_OUT) and self.role == ROLE_SLAVE:
            sw.stats.refused += 1  # OVS answers with an error the controller counts
        elif kind == w.FLOW_MOD:
            sw.flow_mod(w.parse_flow_mod(msg))
        elif kind == w.PACKET_OUT:
            sw.stats.packet_outs += 1
            sw.sink.packet_out(sw.dpid, w.packet_out_data(msg))
        elif kind == w.MULTIPART_REQUEST:
            self._multipart(xid, msg)
        elif kind == w.BARRIER_REQUEST:
            self.send(w.message(w.BARRIER_REPLY, xid))
        elif kind == w.ECHO_REQUEST:
            self.send(w.message(w.ECHO_REPLY, xid, msg[8:]))
        elif kind == w.FEATURES_REQUEST:
            self.send(w.features_reply(xid, sw.dpid))
        elif kind == w.GET_CONFIG_REQUEST:
            self.send(w.get_config_reply(xid))
        elif kind == w.ROLE_REQUEST:
            reply, (self.role, self.generation) = w.role_reply(
                xid, msg[8:], (self.role, self.generation))
            if self.role == ROLE_MASTER:  # one master: the others become slaves
                for other in sw.channels:
                    if other is not self and other.role == ROLE_MASTER:
                        other.role = ROLE_SLAVE
            self.send(reply)
        # HELLO, SET_CONFIG, METER_MOD, ...: nothing to answer

    def _multipart(self, xid: int, msg: bytes) -> None:
        sw = self.switch
        kind = int.from_bytes(msg[8:10])
        if kind == w.MP_PORT_DESC:
            items = [w.port(p.port_no, p.name, p.mac) for p in sw.ports]
        elif kind == w.MP_FLOW:
            items = sw.dump(*w.flow_stats_request(msg[16:]))
            sw.stats.dumps += 1
            sw.stats.dumped_entries += len(items)
            if sw.stats.synced_at is None and self.role != ROLE_SLAVE:
                sw.stats.synced_at = time.monotonic()
        else:
            items = []
        for reply in w.multipart_replies(xid, kind, items):
            self.send(reply)


class SimSwitch:
    def __init__(self, dpid: int, ports: list[PortDesc], sink: Sink,
                 targets: list[tuple[str, int]], tls: ssl.SSLContext | None = None) -> None:
        self.dpid = dpid
        self.ports = ports
        self.sink = sink
        self.flows: dict[FlowKey, Flow] = {}
        self.stats = SwitchStats()
        self.channels = [Channel(self, t, tls) for t in targets]
        self._dump_cache: list[bytes] | None = None

    async def connect(self) -> None:
        await asyncio.gather(*(c.connect() for c in self.channels))

    def close(self) -> None:
        for c in self.channels:
            c.close()
        for f in self.flows.values():
            if f.expiry is not None:
                f.expiry.cancel()

    @property
    def connected(self) -> bool:
        """Whether a controller hears its PacketIns."""
        return any(c.hears for c in self.channels)

    def notify(self, data: bytes) -> bool:
        """Send an asynchronous message to the controllers that hear them."""
        sent = False
        for c in self.channels:
            if c.hears:
                sent = c.send(data) or sent
        return sent

    # the flow table ------------------------------------------------------------------
    def dump(self, table: int, cookie: int, mask: int) -> list[bytes]:
        if table == w.TT_ALL and mask == 0:
            if self._dump_cache is None:
                self._dump_cache = self._entries(list(self.flows.values()))
            return self._dump_cache
        return self._entries([
            f for f in self.flows.values()
            if (table == w.TT_ALL or f.table == table) and f.cookie & mask == cookie & mask
        ])

    def _entries(self, flows: list[Flow]) -> list[bytes]:
        now = time.monotonic()
        return [w.flow_stats(f.table, f.priority, f.idle, f.hard, f.flags, f.cookie,
                             now - f.installed, f.match, f.instructions) for f in flows]

    def flow_mod(self, mod: w.FlowMod) -> None:
        self.stats.flow_mods += 1
        self._dump_cache = None
        if mod.command in (w.FC_ADD, w.FC_MODIFY, w.FC_MODIFY_STRICT):
            key = (mod.table, mod.priority, mod.fields)
            old = self.flows.get(key)
            if old is not None and old.expiry is not None:
                old.expiry.cancel()
            flow = Flow(mod.table, mod.priority, mod.cookie, mod.idle_timeout,
                        mod.hard_timeout, mod.flags, mod.match, mod.fields,
                        mod.instructions, time.monotonic())
            timeout = min(t for t in (mod.idle_timeout, mod.hard_timeout, 1 << 20) if t)
            if timeout < 1 << 20:
                flow.expiry = asyncio.get_running_loop().call_later(
                    timeout, self._expire, key, flow)
            self.flows[key] = flow
            self.sink.flow_added(self.dpid, mod)
            return
        if mod.command == w.FC_DELETE_STRICT:
            gone = [k for k in [(mod.table, mod.priority, mod.fields)] if k in self.flows]
        else:
            want = set(mod.fields)
            gone = [
                k for k, f in self.flows.items()
                if (mod.table == w.TT_ALL or f.table == mod.table)
                and f.cookie & mod.cookie_mask == mod.cookie & mod.cookie_mask
                and want.issubset(f.fields)
            ]
        for key in gone:
            flow = self.flows.pop(key)
            if flow.expiry is not None:
                flow.expiry.cancel()
            self.sink.flow_gone(self.dpid, flow.fields)

    def _expire(self, key: FlowKey, flow: Flow) -> None:
        if self.flows.get(key) is not flow:
            return
        del self.flows[key]
        self._dump_cache = None
        self.sink.flow_gone(self.dpid, flow.fields)
        if flow.flags & w.FF_SEND_FLOW_REM:
            self.stats.flow_removed += 1
            self.notify(w.flow_removed(flow.cookie, flow.priority, flow.table, flow.idle,
                                     flow.hard, time.monotonic() - flow.installed, flow.match))

    def packet_in(self, in_port: int, table: int, data: bytes) -> bool:
        return self.notify(w.packet_in(in_port, table, data))
