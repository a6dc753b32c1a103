"""OpenFlow 1.3 on the wire, hand-packed: what a simulated switch sends and parses.

Only the messages a controller exchanges with br-dl: the handshake (hello,
features, get-config, role, barrier, echo), port descriptions, flow dumps,
PacketIn, FlowRemoved; parsed: FlowMod and PacketOut.  Matches stay raw OXM bytes
(a flow's key is its sorted OXM fields), which is all a dump has to echo back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 4
HEADER = struct.Struct("!BBHI")

# message types
HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY = 0, 1, 2, 3
FEATURES_REQUEST, FEATURES_REPLY = 5, 6
GET_CONFIG_REQUEST, GET_CONFIG_REPLY, SET_CONFIG = 7, 8, 9
PACKET_IN, FLOW_REMOVED, PORT_STATUS, PACKET_OUT, FLOW_MOD = 10, 11, 12, 13, 14
MULTIPART_REQUEST, MULTIPART_REPLY = 18, 19
BARRIER_REQUEST, BARRIER_REPLY = 20, 21
ROLE_REQUEST, ROLE_REPLY = 24, 25
GET_ASYNC_REQUEST, GET_ASYNC_REPLY = 26, 27

# multipart types
MP_DESC, MP_FLOW, MP_PORT_DESC = 0, 1, 13
MPF_REPLY_MORE = 1

# flow-mod commands
FC_ADD, FC_MODIFY, FC_MODIFY_STRICT, FC_DELETE, FC_DELETE_STRICT = 0, 1, 2, 3, 4
FF_SEND_FLOW_REM = 1
RR_IDLE_TIMEOUT = 0
TT_ALL = 0xFF
OFPP_LOCAL = 0xFFFFFFFE
OFPR_ACTION = 1
ROLE_NOCHANGE = 0

OXM_IN_PORT = 0x80000004  # class OPENFLOW_BASIC, field 0, length 4
OXM_IPV4_SRC = 11
OXM_IPV4_DST = 12
MAX_MULTIPART = 60_000  # bytes of one multipart reply's body (< 64 KiB)

_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
_FLOW_STATS_REQ = struct.Struct("!B3xII4xQQ")
_PORT = struct.Struct("!I4x6s2x16sIIIIIIII")
_PACKET_IN = struct.Struct("!IHBBQ")
_PACKET_OUT = struct.Struct("!IIH6x")
_FLOW_REMOVED = struct.Struct("!QHBBIIHHQQ")


def message(kind: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(VERSION, kind, HEADER.size + len(body), xid) + body


def hello() -> bytes:
    return message(HELLO, 0)


def features_reply(xid: int, dpid: int) -> bytes:
    return message(FEATURES_REPLY, xid, struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0x4F, 0))


def get_config_reply(xid: int) -> bytes:
    return message(GET_CONFIG_REPLY, xid, struct.pack("!HH", 0, 0xFFFF))


def role_reply(xid: int, body: bytes, current: tuple[int, int]) -> tuple[bytes, tuple[int, int]]:
    """The reply to a role request and the switch's role after it: (role, generation)."""
    role, generation = struct.unpack_from("!I4xQ", body)
    if role != ROLE_NOCHANGE:
        current = (role, generation)
    return message(ROLE_REPLY, xid, struct.pack("!I4xQ", *current)), current


def multipart_replies(xid: int, kind: int, items: list[bytes]) -> list[bytes]:
    """`items` in replies of at most MAX_MULTIPART bytes, all but the last flagged MORE."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for item in items:
        if size + len(item) > MAX_MULTIPART and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item)
    out = []
    for i, chunk in enumerate(chunks):
        flags = MPF_REPLY_MORE if i < len(chunks) - 1 else 0
        out.append(message(MULTIPART_REPLY, xid,
                           struct.pack("!HH4x", kind, flags) + b"".join(chunk)))
    return out


def port(port_no: int, name: str, mac: str) -> bytes:
    hw = bytes.fromhex(mac.replace(":", ""))
    # config 0, state LIVE (4), curr/advertised/supported/peer 0, speeds 10 Gb/s
    return _PORT.pack(port_no, hw, name.encode()[:15], 0, 4, 0, 0, 0, 0, 10_000_000, 10_000_000)


def padded(length: int) -> int:
    return (length + 7) // 8 * 8


def oxm_fields(match: bytes) -> tuple[bytes, ...]:
    """The OXM TLVs of a raw ofp_match (type, length, fields, padding), sorted."""
    (length,) = struct.unpack_from("!H", match, 2)
    fields = []
    off = 4
    while off + 4 <= length:
        size = match[off + 3]
        fields.append(match[off:off + 4 + size])
        off += 4 + size
    return tuple(sorted(fields))


def ipv4_pair(fields: tuple[bytes, ...]) -> tuple[int, int] | None:
    """(ipv4_src, ipv4_dst) of a match's OXM fields as integers, when both are there."""
    src = dst = None
    for f in fields:
        if f[0] == 0x80 and f[1] == 0x00:
            field = f[2] >> 1
            if field == OXM_IPV4_SRC:
                src = int.from_bytes(f[4:8])
            elif field == OXM_IPV4_DST:
                dst = int.from_bytes(f[4:8])
    return None if src is None or dst is None else (src, dst)


@dataclass(slots=True)
class FlowMod:
    cookie: int
    cookie_mask: int
    table: int
    command: int
    idle_timeout: int
    hard_timeout: int
    priority: int
    flags: int
    match: bytes  # the raw ofp_match, padded
    fields: tuple[bytes, ...]
    instructions: bytes


def parse_flow_mod(msg: bytes) -> FlowMod:
    (cookie, mask, table, command, idle, hard, prio, _buf, _port, _group,
     flags) = _FLOW_MOD.unpack_from(msg, 8)
    (mlen,) = struct.unpack_from("!H", msg, 50)
    end = 48 + padded(mlen)
    raw = bytes(msg[48:end])
    return FlowMod(cookie, mask, table, command, idle, hard, prio, flags, raw,
                   oxm_fields(raw), bytes(msg[end:]))


def flow_stats_request(body: bytes) -> tuple[int, int, int]:
    """(table, cookie, cookie_mask) of a flow-stats request body."""
    table, _port, _group, cookie, mask = _FLOW_STATS_REQ.unpack_from(body)
    return table, cookie, mask


def flow_stats(table: int, priority: int, idle: int, hard: int, flags: int, cookie: int,
               age: float, match: bytes, instructions: bytes) -> bytes:
    length = _FLOW_STATS.size + len(match) + len(instructions)
    secs = int(age)
    return _FLOW_STATS.pack(length, table, secs, int((age - secs) * 1e9), priority, idle,
                            hard, flags, cookie, 0, 0) + match + instructions


def flow_removed(cookie: int, priority: int, table: int, idle: int, hard: int, age: float,
                 match: bytes) -> bytes:
    secs = int(age)
    body = _FLOW_REMOVED.pack(cookie, priority, RR_IDLE_TIMEOUT, table, secs,
                              int((age - secs) * 1e9), idle, hard, 0, 0)
    return message(FLOW_REMOVED, 0, body + match)


def packet_in(in_port: int, table: int, data: bytes) -> bytes:
    # match: OXM type 1, length 12 (in_port), padded to 16; then 2 bytes of pad
    match = struct.pack("!HHII4x", 1, 12, OXM_IN_PORT, in_port)
    body = _PACKET_IN.pack(0xFFFFFFFF, len(data), OFPR_ACTION, table, 0) + match + b"\0\0"
    return message(PACKET_IN, 0, body + data)


def packet_out_data(msg: bytes) -> bytes:
    _buf, _in_port, actions_len = _PACKET_OUT.unpack_from(msg, 8)
    return bytes(msg[24 + actions_len:])


def udp_frame(src_mac: bytes, dst_mac: bytes, src_ip: int, dst_ip: int, sport: int) -> bytes:
    """An Ethernet/IPv4/UDP datagram to port 9 (IP checksum left 0: nobody checks it
    here; the controller completes the UDP one)."""
    payload = b"scale"
    udp = struct.pack("!HHHH", sport, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     src_ip, dst_ip)
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


def frame_pair(data: bytes) -> tuple[int, int] | None:
    """(ipv4 src, dst) of an Ethernet/IPv4 frame."""
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return None
    return int.from_bytes(data[26:30]), int.from_bytes(data[30:34])
