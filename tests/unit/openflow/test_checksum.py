"""controller/openflow/checksum.py against packets os-ken's packet library builds (and
checksums) itself."""

from __future__ import annotations

import struct

import pytest
from os_ken.lib.packet import arp, ethernet, ipv4, ipv6, packet, tcp, udp, vlan
from os_ken.lib.packet.packet_utils import checksum

from controller.openflow.checksum import complete_l4_checksum

MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def frame(*protocols: object) -> bytes:
    pkt = packet.Packet()
    for proto in protocols:
        pkt.add_protocol(proto)
    pkt.serialize()
    return bytes(pkt.data)


def tcp_v4(payload: bytes = b"") -> bytes:
    return frame(ethernet.ethernet(MAC2, MAC1, 0x0800),
                 ipv4.ipv4(src="10.1.0.11", dst="10.1.0.21", proto=6),
                 tcp.tcp(src_port=40000, dst_port=7000, seq=1, bits=tcp.TCP_SYN,
                         window_size=64240), payload)


def udp_v4(payload: bytes) -> bytes:
    return frame(ethernet.ethernet(MAC2, MAC1, 0x0800),
                 ipv4.ipv4(src="10.1.0.11", dst="10.1.0.21", proto=17),
                 udp.udp(src_port=5000, dst_port=5001), payload)


def udp_v6(payload: bytes) -> bytes:
    return frame(ethernet.ethernet(MAC2, MAC1, 0x86DD),
                 ipv6.ipv6(src="fd00::11", dst="fd00::21", nxt=17),
                 udp.udp(src_port=5000, dst_port=5001), payload)


def with_checksum(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + struct.pack("!H", value) + data[at + 2:]


def partial(data: bytes, at: int, pseudo: bytes) -> bytes:
    """What checksum offload leaves in the packet: the pseudo-header's sum, folded,
    not complemented."""
    return with_checksum(data, at, 0xFFFF - checksum(pseudo))


def v4_pseudo(data: bytes, proto: int) -> bytes:
    ihl = (data[14] & 0x0F) * 4
    length = int.from_bytes(data[16:18], "big") - ihl
    return data[26:34] + struct.pack("!BBH", 0, proto, length)


@pytest.mark.parametrize("payload", [b"", b"x", b"hello, world" * 100])
def test_a_tcp_segment_with_an_offloaded_checksum_is_completed(payload: bytes) -> None:
    good = tcp_v4(payload)
    at = 14 + 20 + 16
    bad = partial(good, at, v4_pseudo(good, 6))
    assert bad != good
    assert complete_l4_checksum(bad) == good
    assert complete_l4_checksum(good) == good  # a right checksum stays as it is


@pytest.mark.parametrize("payload", [b"a", b"ping" * 300])
def test_a_udp_datagram_with_an_offloaded_checksum_is_completed(payload: bytes) -> None:
    good = udp_v4(payload)
    at = 14 + 20 + 6
    assert complete_l4_checksum(partial(good, at, v4_pseudo(good, 17))) == good
    assert complete_l4_checksum(with_checksum(good, at, 0x1234)) == good


def test_udp_without_a_checksum_stays_without() -> None:
    data = with_checksum(udp_v4(b"abc"), 14 + 20 + 6, 0)
    assert complete_l4_checksum(data) == data


def test_ipv6_udp_and_vlan_tagged_tcp() -> None:
    good6 = udp_v6(b"six")
    at6 = 14 + 40 + 6
    assert complete_l4_checksum(with_checksum(good6, at6, 0xBEEF)) == good6
    good = frame(ethernet.ethernet(MAC2, MAC1, 0x8100), vlan.vlan(vid=5, ethertype=0x0800),
                 ipv4.ipv4(src="10.1.0.11", dst="10.1.0.21", proto=6),
                 tcp.tcp(src_port=1, dst_port=2, bits=tcp.TCP_SYN))
    at = 18 + 20 + 16
    assert complete_l4_checksum(with_checksum(good, at, 0)) == good


def test_what_cannot_be_completed_is_left_alone() -> None:
    arp_frame = frame(ethernet.ethernet("ff:ff:ff:ff:ff:ff", MAC1, 0x0806),
                      arp.arp_ip(arp.ARP_REQUEST, MAC1, "10.1.0.11", "00:00:00:00:00:00",
                                 "10.1.0.21"))
    assert complete_l4_checksum(arp_frame) == arp_frame
    # a first fragment (MF set): the checksum covers datagram bytes not in this frame
    fragment = frame(ethernet.ethernet(MAC2, MAC1, 0x0800),
                     ipv4.ipv4(src="10.1.0.11", dst="10.1.0.21", proto=17, flags=1),
                     udp.udp(src_port=5000, dst_port=5001), b"z" * 64)
    broken = with_checksum(fragment, 14 + 20 + 6, 0x1111)
    assert complete_l4_checksum(broken) == broken
    # truncated (the IP header claims more than the frame holds)
    good = tcp_v4(b"payload")
    assert complete_l4_checksum(good[:-3]) == good[:-3]
    assert complete_l4_checksum(b"\x00" * 10) == b"\x00" * 10
