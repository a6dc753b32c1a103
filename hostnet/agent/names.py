"""The host's name responder (docs/architecture.md, "Names across hosts").

Docker gives every container the responder's address as its external nameserver;
Docker's embedded DNS forwards what it does not know from inside the container, so
a query arrives here with the container's own address as its source.  A query from a
local daolinet container for a name of its table (what the controller's `names`
message says it may resolve) is answered here; a single-label name that is not in
its table is NXDOMAIN (a container name it may not reach, or none); anything else,
and every query from an address that is no local container, goes to the host's own
resolvers (its resolv.conf without the responder), as Docker's would have.  The last
table keeps answering while the controller is away.

The table is replaced whole on the route thread (`load`) and read on the event loop:
one reference swap, no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from controller.agents.messages import SourceTable

log = logging.getLogger(__name__)

IPv4 = ipaddress.IPv4Address

TTL = 0  # answers follow starts, stops and renames at once: nobody may keep them
MAX_QUERY = 4096  # bytes of one query we read (UDP datagram, TCP message)
UPSTREAM_TIMEOUT = 2.0  # seconds per upstream resolver
MAX_FORWARDS = 64  # queries forwarded at once (more: SERVFAIL at once)
RATE = 200.0  # queries per second per source address, sustained
BURST = 400.0  # ... and at once
MAX_SOURCES_TRACKED = 4096  # rate buckets kept (the oldest go)
TCP_IDLE = 10.0  # seconds a TCP client may keep a connection without a query


@dataclass(frozen=True)
class SourceEntry:
    """What one container may resolve: names -> addresses, reverse names -> name."""

    forward: dict[str, tuple[IPv4, ...]]
    reverse: dict[str, str]


def compile_tables(tables: Iterable[SourceTable]) -> dict[IPv4, SourceEntry]:
    """The lookup form of a `names` message's tables (names lower case, no final dot)."""
    out: dict[IPv4, SourceEntry] = {}
    for table in tables:
        forward: dict[str, list[IPv4]] = {}
        reverse: dict[str, str] = {}
        for peer in table.peers:
            for name in peer.names:
                ips = forward.setdefault(name.lower().rstrip("."), [])
                if peer.ip not in ips:
                    ips.append(peer.ip)
            reverse[_reverse_key(peer.ip)] = peer.names[0].lower()
        out[table.source] = SourceEntry({n: tuple(ips) for n, ips in forward.items()}, reverse)
    return out


def _reverse_key(ip: IPv4) -> str:
    return dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True).lower()


class NamesTable:
    """The last names table the controller sent (empty until the first)."""

    def __init__(self) -> None:
        self._entries: dict[IPv4, SourceEntry] = {}

    def load(self, tables: Iterable[SourceTable]) -> None:
        self._entries = compile_tables(tables)

    def entry(self, source: IPv4) -> SourceEntry | None:
        return self._entries.get(source)

    def __len__(self) -> int:
        return len(self._entries)


def upstreams_from(resolv_conf: str, responder: IPv4) -> list[str]:
    """The nameservers of a resolv.conf text, without the responder (IPv4/IPv6)."""
    found: list[str] = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            if addr != responder and str(addr) not in found:
                found.append(str(addr))
    return found


@dataclass
class RateLimit:
    """A token bucket per source address (bounded: the least recently seen go)."""

    rate: float = RATE
    burst: float = BURST
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self.buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self.buckets) >= MAX_SOURCES_TRACKED:
            self.buckets.pop(next(iter(self.buckets)))
        allowed = tokens >= 1.0
        self.buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class Resolver:
    """Turns one query into its answer: from the table, or from upstream."""

    def __init__(self, table: NamesTable, upstreams: Sequence[str], *,
                 timeout: float = UPSTREAM_TIMEOUT, upstream_port: int = 53,
                 rate: RateLimit | None = None) -> None:
        self.table = table
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.upstream_port = upstream_port
        self.rate = rate or RateLimit()
        self._forwards = asyncio.Semaphore(MAX_FORWARDS)
        self.answered = 0  # from the table
        self.forwarded = 0
        self.dropped = 0  # malformed or over the rate

    async def resolve(self, wire: bytes, source: str, *, tcp: bool = False) -> bytes | None:
        """The answer to `wire` from `source`; None: no answer (malformed, or over
        its rate: a client retries, a flood gets nothing)."""
        if len(wire) > MAX_QUERY or not self.rate.allow(source, time.monotonic()):
            self.dropped += 1
            return None
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # any malformed packet: dnspython raises more than DNSException
            self.dropped += 1
            return None
        if query.flags & dns.flags.QR or query.opcode() != dns.opcode.QUERY:
            self.dropped += 1
            return None
        if len(query.question) != 1:
            return _reply(query, dns.rcode.FORMERR)
        local = self._local(query, source)
        if local is not None:
            self.answered += 1
            return local
        return await self._forward(query, wire, tcp)

    def _local(self, query: dns.message.Message, source: str) -> bytes | None:
        try:
            src = IPv4(source)
        except ValueError:
            return None
        entry = self.table.entry(src)
        if entry is None:
            return None  # not a local container: as Docker would have
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            return None
        name = question.name.to_text(omit_final_dot=True).lower()
        if name in entry.forward:
            reply = query_reply(query)
            if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
                reply.answer.append(dns.rrset.from_text_list(
                    question.name, TTL, "IN", "A", [str(ip) for ip in entry.forward[name]]))
            return reply.to_wire()  # other types: the name exists, no data
        if name in entry.reverse:
            reply = query_reply(query)
            if question.rdtype in (dns.rdatatype.PTR, dns.rdatatype.ANY):
                reply.answer.append(dns.rrset.from_text_list(
                    question.name, TTL, "IN", "PTR", [entry.reverse[name] + "."]))
            return reply.to_wire()
        if name and "." not in name:
            # a single label is a container name or nothing: never asked of upstream
            return _reply(query, dns.rcode.NXDOMAIN)
        return None

    async def _forward(self, query: dns.message.Message, wire: bytes, tcp: bool) -> bytes:
        if not self.upstreams or self._forwards.locked():
            return _reply(query, dns.rcode.SERVFAIL)
        async with self._forwards:
            for server in self.upstreams:
                try:
                    answer = await asyncio.wait_for(
                        (_ask_tcp if tcp else _ask_udp)(server, self.upstream_port, wire),
                        self.timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    log.debug("upstream %s: %s", server, exc)
                    continue
                if len(answer) >= 2 and answer[:2] == wire[:2]:
                    self.forwarded += 1
                    return answer
        return _reply(query, dns.rcode.SERVFAIL)


def query_reply(query: dns.message.Message) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA | dns.flags.RA
    return reply


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    reply = query_reply(query)
    reply.set_rcode(rcode)
    return reply.to_wire()


class _AskProtocol(asyncio.DatagramProtocol):
    def __init__(self, wire: bytes, done: asyncio.Future[bytes]) -> None:
        self.wire = wire
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.DatagramTransport, transport).sendto(self.wire)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.done.done() and data[:2] == self.wire[:2]:
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _ask_udp(server: str, port: int, wire: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _AskProtocol(wire, done), remote_addr=(server, port))
    try:
        return await done
    finally:
        transport.close()


async def _ask_tcp(server: str, port: int, wire: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, port)
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a datagram endpoint's transport (not a subclass of it on every Python)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        task = asyncio.ensure_future(self._answer(data, (str(addr[0]), int(addr[1]))))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            answer = await self.resolver.resolve(data, addr[0])
        except Exception:  # one bad query must not stop the responder
            log.exception("query from %s failed", addr[0])
            return
        if answer is not None and self.transport is not None:
            if len(answer) > udp_limit(data):  # truncated: the client asks again by TCP
                with contextlib.suppress(dns.exception.DNSException):
                    reply = dns.message.from_wire(answer)
                    reply.flags |= dns.flags.TC
                    reply.answer = []
                    answer = reply.to_wire()
            self.transport.sendto(answer, addr)


def udp_limit(query: bytes) -> int:
    """The largest UDP answer the asker takes: its EDNS payload size, else 512."""
    try:
        message = dns.message.from_wire(query)
    except Exception:  # answered already, so it parsed; be safe anyway
        return 512
    return max(512, message.payload) if message.edns >= 0 else 512


class Responder:
    """The UDP and TCP servers on the responder address."""

    def __init__(self, resolver: Resolver, address: str, port: int = 53) -> None:
        self.resolver = resolver
        self.address = address
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpServer | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpServer(self.resolver), local_addr=(self.address, self.port))
        self._udp, self._udp_protocol = transport, protocol
        self._tcp = await asyncio.start_server(self._serve_tcp, self.address, self.port,
                                               reuse_address=True)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._udp_protocol is not None:
            for task in list(self._udp_protocol.pending):
                task.cancel()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                (size,) = struct.unpack("!H", head)
                if size > MAX_QUERY:
                    return  # not a query we read: the connection goes
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                answer = await self.resolver.resolve(data, source, tcp=True)
                if answer is None:
                    return
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def host_upstreams(responder: IPv4, resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's resolvers (read at startup; none: unknown names get SERVFAIL)."""
    try:
        return upstreams_from(resolv_conf.read_text(), responder)
    except OSError as exc:
        log.warning("cannot read %s: %s; names outside daolinet will not resolve",
                    resolv_conf, exc)
        return []
