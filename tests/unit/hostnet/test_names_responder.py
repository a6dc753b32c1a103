"""The host's name responder (hostnet/agent/names.py) on loopback: answers from the
table for a local container, NXDOMAIN for a name it may not resolve, everything else
forwarded to the host's resolvers (a fake upstream here), malformed packets and
floods dropped without harm."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from controller.agents.messages import NamedPeer, SourceTable
from hostnet.agent.names import (
    MAX_SOURCES_TRACKED,
    NamesTable,
    RateLimit,
    Resolver,
    Responder,
    udp_limit,
    upstreams_from,
)

IP = ipaddress.IPv4Address
C2 = "10.1.0.2"  # the asking container
W1 = "10.1.0.7"  # a peer it may reach (on another host)
OUTSIDE_ANSWER = "192.0.2.80"


def _table() -> NamesTable:
    table = NamesTable()
    table.load([SourceTable(source=IP(C2), peers=[
        NamedPeer(ip=IP(W1), names=["w1", "api", "Box1"]),
        NamedPeer(ip=IP(C2), names=["c2"]),
    ])])
    return table


class _Upstream(asyncio.DatagramProtocol):
    """A resolver on loopback answering every A query with OUTSIDE_ANSWER."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.asked: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a datagram endpoint's transport (not a subclass of it on every Python)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        self.asked.append(query.question[0].name.to_text())
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A",
                                                OUTSIDE_ANSWER))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[tuple[_Upstream, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Upstream,
                                                           local_addr=("127.0.0.1", 0))
    try:
        yield proto, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def run(test: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Run one async test body in a fresh event loop (no pytest plugin for asyncio)."""
    asyncio.run(test(*args))


def _ask(name: str, rdtype: str = "A") -> bytes:
    return dns.message.make_query(name, rdtype).to_wire()


def _parse(wire: bytes | None) -> dns.message.Message:
    assert wire is not None
    return dns.message.from_wire(wire)


def _addresses(reply: dns.message.Message) -> set[str]:
    return {r.to_text() for rrset in reply.answer for r in rrset}


def test_a_names_alias_and_hostname_resolve_from_the_table() -> None:
    run(_test_a_names_alias_and_hostname_resolve_from_the_table)


async def _test_a_names_alias_and_hostname_resolve_from_the_table() -> None:
    resolver = Resolver(_table(), [])
    for name in ("w1", "api", "box1.", "W1"):
        reply = _parse(await resolver.resolve(_ask(name), C2))
        assert reply.rcode() == dns.rcode.NOERROR and _addresses(reply) == {W1}, name
        assert reply.answer[0].ttl <= 1 and reply.flags & dns.flags.AA
    # a known name, another type: it exists, with no such data (not forwarded)
    aaaa = _parse(await resolver.resolve(_ask("w1", "AAAA"), C2))
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []


def test_a_reverse_lookup_gives_the_container_name() -> None:
    run(_test_a_reverse_lookup_gives_the_container_name)


async def _test_a_reverse_lookup_gives_the_container_name() -> None:
    ptr = dns.reversename.from_address(W1).to_text()
    reply = _parse(await Resolver(_table(), []).resolve(_ask(ptr, "PTR"), C2))
    assert _addresses(reply) == {"w1."}


def test_a_name_not_in_its_table_is_nxdomain_and_never_leaves_the_host() -> None:
    run(_test_a_name_not_in_its_table_is_nxdomain_and_never_leaves_the_host)


async def _test_a_name_not_in_its_table_is_nxdomain_and_never_leaves_the_host() -> None:
    async with upstream() as (server, port):
        resolver = Resolver(_table(), ["127.0.0.1"], upstream_port=port)
        reply = _parse(await resolver.resolve(_ask("d1"), C2))  # one it may not reach
        assert reply.rcode() == dns.rcode.NXDOMAIN and reply.answer == []
        assert server.asked == []


def test_other_names_and_other_sources_go_upstream() -> None:
    run(_test_other_names_and_other_sources_go_upstream)


async def _test_other_names_and_other_sources_go_upstream() -> None:
    async with upstream() as (server, port):
        resolver = Resolver(_table(), ["127.0.0.1"], upstream_port=port)
        reply = _parse(await resolver.resolve(_ask("example.org"), C2))
        assert _addresses(reply) == {OUTSIDE_ANSWER}
        # a source that is no local container (a bridge network's): as Docker would have
        reply = _parse(await resolver.resolve(_ask("w1"), "172.17.0.2"))
        assert _addresses(reply) == {OUTSIDE_ANSWER}
        assert server.asked == ["example.org.", "w1."]
        assert (resolver.answered, resolver.forwarded) == (0, 2)


def test_no_upstream_answer_is_servfail() -> None:
    run(_test_no_upstream_answer_is_servfail)


async def _test_no_upstream_answer_is_servfail() -> None:
    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nobody listens there
    resolver = Resolver(_table(), ["127.0.0.1"], upstream_port=port, timeout=0.3)
    reply = _parse(await resolver.resolve(_ask("example.org"), C2))
    assert reply.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize("junk", [b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\x00" * 3,
                                  _ask("w1")[:-3], b"\x00" * 5000])
def test_malformed_packets_are_dropped_and_the_next_query_is_answered(junk: bytes) -> None:
    run(_test_malformed_packets_are_dropped_and_the_next_query_is_answered, junk)


async def _test_malformed_packets_are_dropped_and_the_next_query_is_answered(
    junk: bytes,
) -> None:
    resolver = Resolver(_table(), [])
    assert await resolver.resolve(junk, C2) is None
    assert _addresses(_parse(await resolver.resolve(_ask("w1"), C2))) == {W1}


def test_an_answer_is_not_taken_for_a_query() -> None:
    run(_test_an_answer_is_not_taken_for_a_query)


async def _test_an_answer_is_not_taken_for_a_query() -> None:
    query = dns.message.make_query("w1", "A")
    response = dns.message.make_response(query).to_wire()
    assert await Resolver(_table(), []).resolve(response, C2) is None


def test_a_flooding_source_is_cut_off_and_others_are_not() -> None:
    run(_test_a_flooding_source_is_cut_off_and_others_are_not)


async def _test_a_flooding_source_is_cut_off_and_others_are_not() -> None:
    resolver = Resolver(_table(), [], rate=RateLimit(rate=1.0, burst=20.0))
    answers = [await resolver.resolve(_ask("w1"), C2) for _ in range(60)]
    assert answers[:20].count(None) == 0 and answers.count(None) >= 35  # past its burst
    assert await resolver.resolve(_ask("w1"), "10.1.0.3") is not None  # another source


def test_the_rate_limit_refills_and_bounds_its_memory() -> None:
    limit = RateLimit(rate=10.0, burst=2.0)
    assert [limit.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("a", 0.1)  # one token back after 0.1 s
    for n in range(MAX_SOURCES_TRACKED + 10):
        limit.allow(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 1.0)
    assert len(limit.buckets) <= MAX_SOURCES_TRACKED


def test_the_last_table_keeps_answering_and_a_new_one_replaces_it() -> None:
    run(_test_the_last_table_keeps_answering_and_a_new_one_replaces_it)


async def _test_the_last_table_keeps_answering_and_a_new_one_replaces_it() -> None:
    table = _table()
    resolver = Resolver(table, [])
    assert _addresses(_parse(await resolver.resolve(_ask("w1"), C2))) == {W1}
    table.load([SourceTable(source=IP(C2), peers=[NamedPeer(ip=IP(C2), names=["c2"])])])
    assert _parse(await resolver.resolve(_ask("w1"), C2)).rcode() == dns.rcode.NXDOMAIN


def test_the_responder_serves_udp_and_tcp() -> None:
    run(_test_the_responder_serves_udp_and_tcp)


async def _test_the_responder_serves_udp_and_tcp() -> None:
    responder = Responder(Resolver(_table(), []), "127.0.0.1", 0)
    # port 0: ask the kernel for two ports of our own (UDP and TCP apart)
    await responder.start()
    try:
        assert responder._udp is not None and responder._tcp is not None
        udp_port = responder._udp.get_extra_info("sockname")[1]
        tcp_port = responder._tcp.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", udp_port))
            await loop.sock_sendall(sock, b"junk")  # ignored
            await loop.sock_sendall(sock, _ask("w1"))
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        finally:
            sock.close()
        # the source is 127.0.0.1, no container: forwarded, and no upstream: SERVFAIL
        assert _parse(data).rcode() == dns.rcode.SERVFAIL
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        wire = _ask("example.org")
        writer.write(struct.pack("!H", len(wire)) + wire)
        (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
        assert _parse(await reader.readexactly(size)).rcode() == dns.rcode.SERVFAIL
        writer.close()
    finally:
        await responder.close()


def test_the_udp_limit_is_the_askers_edns_size_or_512() -> None:
    assert udp_limit(_ask("w1")) == 512
    assert udp_limit(dns.message.make_query("w1", "A", use_edns=0, payload=1232).to_wire()) \
        == 1232
    assert udp_limit(b"junk") == 512


def test_upstreams_are_the_hosts_resolvers_without_the_responder() -> None:
    conf = ("# comment\nnameserver 169.254.218.53\nnameserver 192.0.2.53\n"
            "search lab\nnameserver fe80::1%eth0\nnameserver junk\nnameserver 192.0.2.53\n")
    assert upstreams_from(conf, IP("169.254.218.53")) == ["192.0.2.53", "fe80::1"]


def test_an_answer_too_long_for_udp_is_truncated_and_whole_over_tcp() -> None:
    run(_test_an_answer_too_long_for_udp_is_truncated_and_whole_over_tcp)


async def _test_an_answer_too_long_for_udp_is_truncated_and_whole_over_tcp() -> None:
    table = NamesTable()  # 60 containers share one alias; the asker is 127.0.0.1
    table.load([SourceTable(source=IP("127.0.0.1"), peers=[
        NamedPeer(ip=IP(f"10.1.0.{n}"), names=[f"c{n}", "many"]) for n in range(10, 70)
    ])])
    responder = Responder(Resolver(table, []), "127.0.0.1", 0)
    await responder.start()
    try:
        assert responder._udp is not None and responder._tcp is not None
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, responder._udp.get_extra_info("sockname"))
            await loop.sock_sendall(sock, _ask("many"))
            short = _parse(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        finally:
            sock.close()
        assert short.flags & dns.flags.TC and short.answer == []
        reader, writer = await asyncio.open_connection(
            *responder._tcp.sockets[0].getsockname()[:2])
        wire = _ask("many")
        writer.write(struct.pack("!H", len(wire)) + wire)
        (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
        assert len(_addresses(_parse(await reader.readexactly(size)))) == 60
        writer.close()
    finally:
        await responder.close()
