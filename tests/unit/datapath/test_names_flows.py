"""A container port's DNS flows (controller/datapath/tables.py, `names_flows`): its
queries to the host's name responder go to LOCAL, the answers come back to it, with
no PacketIn; nothing else, and no other port, gets through them."""

from __future__ import annotations

import ipaddress

import pytest

from controller.datapath.messages import OFPP_LOCAL
from controller.datapath.tables import PRIO_NAMES, T_CLASSIFY
from controller.desired.models import GATEWAY_MAC, NAMES_RESPONDER
from controller.desired.policy import IP_PROTO_TCP, IP_PROTO_UDP
from tests.unit.flowsim import Lab, Packet

RESPONDER = str(NAMES_RESPONDER)
LOCAL_MAC = "aa:00:00:00:00:01"  # flowsim's LOCAL port of h1 (dpid 1)


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2"], idle_timeout=10)
    lab.network("web", "10.1.0.0/24")
    return lab


def _query(lab: Lab, ep: object, proto: int = IP_PROTO_UDP, port: int = 53) -> Packet:
    name = "udp" if proto == IP_PROTO_UDP else "tcp"
    pkt = lab.ip_packet(ep, RESPONDER, proto)  # type: ignore[arg-type]
    return dict(pkt, **{f"{name}_src": 40000, f"{name}_dst": port})


def _answer(ip: str, proto: int = IP_PROTO_UDP, port: int = 53) -> Packet:
    name = "udp" if proto == IP_PROTO_UDP else "tcp"
    return {"in_port": OFPP_LOCAL, "eth_type": 0x0800, "eth_src": LOCAL_MAC,
            "eth_dst": GATEWAY_MAC, "ipv4_src": RESPONDER, "ipv4_dst": ip, "ip_proto": proto,
            f"{name}_src": port, f"{name}_dst": 40000}


@pytest.mark.parametrize("proto", [IP_PROTO_UDP, IP_PROTO_TCP])
def test_queries_go_to_the_host_and_answers_to_the_port_without_a_packet_in(
    lab: Lab, proto: int
) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    sw = lab.switches["h1"]
    v = lab.send("h1", _query(lab, a, proto))
    assert v.kind == "output" and v.port == OFPP_LOCAL
    assert v.packet is not None and v.packet["eth_dst"] == LOCAL_MAC  # the kernel takes it
    back = sw.process(_answer("10.1.0.5", proto))
    assert back.kind == "output" and back.port == lab.port_of(a)
    assert back.packet is not None
    assert (back.packet["eth_src"], back.packet["eth_dst"]) == (GATEWAY_MAC, a.mac)
    assert lab.core.state.counters.packet_ins == 0


def test_only_dns_to_the_responder_from_the_ports_own_address_is_taken(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    # another port of the responder: the usual way (a PacketIn, denied: no such peer)
    assert lab.send("h1", _query(lab, a, port=80)).kind != "output"
    # a spoofed source does not get through to the host
    spoofed = dict(_query(lab, a), ipv4_src="10.1.0.9")
    assert lab.send("h1", spoofed).kind == "drop"
    # an answer from the responder's address with another source port is not delivered
    assert lab.switches["h1"].process(_answer("10.1.0.5", port=5353)).kind != "output"


def test_the_flows_follow_the_endpoint(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    sw = lab.switches["h1"]
    assert len(sw.flows(T_CLASSIFY, PRIO_NAMES)) == 4  # udp, tcp; each way
    lab.remove(a)
    assert sw.flows(T_CLASSIFY, PRIO_NAMES) == []  # the answers' flow on LOCAL too
    assert sw.process(_answer("10.1.0.5")).kind != "output"  # not delivered to the port


def test_the_flows_come_back_when_the_switch_reconnects(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    sw = lab.switches["h1"]
    sw.entries = []  # the switch lost its tables (a restart)
    lab.connect("h1")
    assert lab.send("h1", _query(lab, a)).port == OFPP_LOCAL
    assert sw.process(_answer(str(ipaddress.IPv4Address("10.1.0.5")))).port == lab.port_of(a)
