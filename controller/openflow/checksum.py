"""Complete the TCP/UDP checksum of a frame the controller sends back (PacketOut).

With checksum offload on a container's interface (needed for TSO on the userspace
datapath), a packet reaches the switch with only the pseudo-header's partial sum in
its TCP/UDP checksum: the datapath would complete it on output, but a PacketIn hands
the controller the raw bytes and a PacketOut of them carries no offload metadata, so
the receiver would drop the first packet of the connection (docs/performance.md,
"Sites"). Recomputing a checksum that is already right changes nothing, so the
controller completes every IPv4/IPv6 TCP or UDP packet it sends out.
"""

from __future__ import annotations

import struct

from os_ken.lib.packet.packet_utils import checksum as internet_checksum

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8)
TCP = 6
UDP = 17
CHECKSUM_OFFSET = {TCP: 16, UDP: 6}


def complete_l4_checksum(frame: bytes) -> bytes:
    """`frame` with its TCP or UDP checksum computed over the whole segment; any
    other frame (ARP, ICMP, a fragment, a truncated packet, UDP sent without a
    checksum) unchanged."""
    offset = 12
    ethertype = int.from_bytes(frame[offset:offset + 2], "big")
    while ethertype in ETH_VLAN and len(frame) >= offset + 6:
        offset += 4
        ethertype = int.from_bytes(frame[offset:offset + 2], "big")
    ip = offset + 2
    if ethertype == ETH_IPV4 and len(frame) >= ip + 20:
        ihl = (frame[ip] & 0x0F) * 4
        total_length = int.from_bytes(frame[ip + 2:ip + 4], "big")
        fragment = int.from_bytes(frame[ip + 6:ip + 8], "big") & 0x3FFF  # MF, offset
        proto = frame[ip + 9]
        l4 = ip + ihl
        end = ip + total_length
        if fragment or ihl < 20 or end > len(frame) or end < l4:
            return frame
        pseudo = frame[ip + 12:ip + 20] + struct.pack("!BBH", 0, proto, end - l4)
    elif ethertype == ETH_IPV6 and len(frame) >= ip + 40:
        proto = frame[ip + 6]  # extension headers are not followed: left unchanged
        l4 = ip + 40
        end = l4 + int.from_bytes(frame[ip + 4:ip + 6], "big")
        if end > len(frame):
            return frame
        pseudo = frame[ip + 8:ip + 40] + struct.pack("!IxxxB", end - l4, proto)
    else:
        return frame
    field = CHECKSUM_OFFSET.get(proto)
    if field is None or end - l4 < field + 2:
        return frame
    at = l4 + field
    if proto == UDP and ethertype == ETH_IPV4 and frame[at:at + 2] == b"\0\0":
        return frame  # IPv4 UDP without a checksum stays without
    segment = frame[l4:at] + b"\0\0" + frame[at + 2:end]
    checksum: int = internet_checksum(pseudo + segment)  # RFC 1071 (os-ken)
    if proto == UDP and checksum == 0:
        checksum = 0xFFFF  # 0 means "no checksum" in UDP
    return frame[:at] + checksum.to_bytes(2, "big") + frame[at + 2:]
