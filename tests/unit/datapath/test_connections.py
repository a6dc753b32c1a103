"""The core's events for the connection log (controller/datapath/connections.py),
on simulated switches: a decision per first packet, an expiry with what the flows
passed, a revocation, and the packets a drop flow dropped."""

from __future__ import annotations

import pytest

from controller.datapath.connections import ConnEvent
from controller.datapath.core.facade import Core
from controller.datapath.events import PortInfo
from controller.datapath.state import CoreState
from controller.datapath.tables import PRIO_CONNECTION
from controller.desired.models import FirewallRule, PairPolicy, RuleSource
from tests.unit.flowsim import Lab


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2"], idle_timeout=10)
    lab.network("web", "10.1.0.0/24")
    return lab


def events(lab: Lab, kind: str) -> list[ConnEvent]:
    return [e for e in lab.connections if e.event == kind]


def test_an_allowed_connection_is_logged_with_what_decided_and_its_path(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    assert lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 80)).kind == "controller"
    (e,) = events(lab, "allowed")
    assert (str(e.src_ip), str(e.dst_ip), e.proto, e.sport, e.dport) == (
        "10.1.0.5", "10.1.0.6", 6, 40000, 80)
    assert e.src == ("a", "web", "h1", "default") and e.dst == ("b", "web", "h2", "default")
    assert (e.verdict, e.kind, e.reason, e.path, e.observer) == (
        "allow", "network", "same network web", "underlay", "h1")
    assert events(lab, "denied") == [] and events(lab, "expired") == []


def test_an_expired_connection_carries_its_packets_bytes_and_duration(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h1", "b", "web", "10.1.0.6")
    pkt = lab.ip_packet(a, "10.1.0.6")
    lab.send("h1", pkt)  # the first packet: a PacketIn, sent on by the controller
    for _ in range(3):
        assert lab.send("h1", pkt).kind == "output"
    for _ in range(2):
        assert lab.send("h1", lab.reply(pkt, b)).kind == "output"
    lab.advance(4.0)
    assert events(lab, "expired") == []  # still live
    lab.advance(11.0)
    (e,) = events(lab, "expired")
    assert e.path == "local" and e.verdict == "allow" and e.kind == "network"
    assert (e.packets, e.bytes) == (5, 500)  # each packet once, both directions
    assert e.duration == pytest.approx(15.0)


def test_a_denied_first_packet_and_its_drop_flow_are_logged(lab: Lab) -> None:
    lab.network("db", "10.2.0.0/24")
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "d", "db", "10.2.0.6")
    pkt = lab.tcp_packet(a, "10.2.0.6", 5432)
    lab.send("h1", pkt)
    (e,) = events(lab, "denied")
    assert (e.verdict, e.kind, e.reason, e.path, e.count) == (
        "deny", "default", "default deny", None, 1)
    for _ in range(7):  # the flood meets the drop flow in the switch
        assert lab.send("h1", pkt).kind == "drop"
    assert len(events(lab, "denied")) == 1
    lab.advance(5.0)  # the drop flow idles out: its packets join the denial
    first, dropped = events(lab, "denied")
    assert dropped.count == 7 and dropped.src == first.src and dropped.dst == first.dst


def test_a_firewall_rule_that_denies_is_named(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_rule(FirewallRule(
        id="r-ssh", target_kind="network", target="web", position=0, action="deny",
        source=RuleSource(kind="any"), protocol="tcp", ports=("22",)))
    lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 22))
    (e,) = events(lab, "denied")
    assert (e.kind, e.rule_id, e.dport) == ("firewall", "r-ssh", 22)
    lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 80))
    (ok,) = events(lab, "allowed")
    assert (ok.kind, ok.dport) == ("network", 80)


def test_a_connection_revoked_by_a_policy_change_is_logged(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    pkt = lab.ip_packet(a, "10.1.0.6")
    lab.send("h1", pkt)
    lab.advance(2.0)
    lab.index.put_pair_policy(PairPolicy(a="a", b="b", action="deny"))
    lab.policy_changed()
    (e,) = events(lab, "revoked")
    assert (e.src_ip, e.verdict, e.kind) == (pkt_src := events(lab, "allowed")[0].src_ip,
                                             "allow", "network")
    assert str(pkt_src) == "10.1.0.5" and e.duration == pytest.approx(2.0)
    lab.advance(20.0)
    assert events(lab, "expired") == []  # revoked, not expired as well
    lab.send("h1", pkt)
    assert events(lab, "denied")[-1].kind == "pair"


def test_a_spoofed_source_is_denied_with_its_reason(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    spoofed = dict(lab.ip_packet(a, "10.1.0.6"), ipv4_src="10.1.0.99")
    lab.packet_in("h1", spoofed)
    (e,) = events(lab, "denied")
    assert "not the port's own" in e.reason and e.src == ("a", "web", "h1", "default")


def test_a_packet_that_overtook_its_flows_is_no_new_entry(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    pkt = lab.tcp_packet(a, "10.1.0.6", 80)
    lab.send("h1", pkt)
    lab.packet_in("h1", pkt)  # came back to the controller before its flow was in
    lab.packet_in("h2", dict(lab.reply(pkt, b)))  # and the reply, on the other host
    assert len(events(lab, "allowed")) == 1


def test_each_new_grant_of_a_stateful_pair_is_an_entry(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_rule(FirewallRule(
        id="r-web", target_kind="network", target="web", position=0, action="allow",
        source=RuleSource(kind="any"), protocol="tcp", ports=("80", "443")))
    lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 80))
    lab.packet_in("h1", lab.tcp_packet(a, "10.1.0.6", 80, sport=40001), table=2)
    lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 443))
    assert [(e.dport, e.rule_id) for e in events(lab, "allowed")] == [
        (80, "r-web"), (443, "r-web")]


def restart(lab: Lab) -> None:
    """A new controller process: a fresh core adopts the flows the switches hold."""
    lab.core = Core(CoreState(idle_timeout=10))
    for host in lab.switches:
        lab.connect(host)


def test_a_connection_adopted_after_a_restart_is_logged_at_its_expiry(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    pkt = lab.ip_packet(a, "10.1.0.6")
    lab.send("h1", pkt)
    for _ in range(3):
        assert lab.send("h1", pkt).kind == "output"
    lab.advance(2.0)
    restart(lab)
    for _ in range(2):
        assert lab.send("h1", pkt).kind == "output"  # the adopted flow serves on
    lab.advance(15.0)
    (e,) = events(lab, "expired")
    assert (str(e.src_ip), str(e.dst_ip), e.proto, e.path, e.verdict, e.observer) == (
        "10.1.0.5", "10.1.0.6", 0, "underlay", "allow", "h1")
    assert e.reason == "same network web (adopted from the switch's flows)"
    assert e.src == ("a", "web", "h1", "default") and e.dst == ("b", "web", "h2", "default")
    assert (e.packets, e.bytes) == (5, 500)  # what the switch counted, before and after
    assert e.duration == pytest.approx(17.0)


def test_an_adopted_stateful_connection_keeps_its_direction_and_port(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_rule(FirewallRule(
        id="r-web", target_kind="network", target="web", position=0, action="allow",
        source=RuleSource(kind="any"), protocol="tcp", ports=("80",)))
    lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 80))
    restart(lab)
    lab.advance(15.0)
    (e,) = events(lab, "expired")
    assert (str(e.src_ip), e.proto, e.dport, e.rule_id) == ("10.1.0.5", 6, 80, "r-web")


def test_removing_a_container_revokes_its_connections_with_the_reason(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    c = lab.container("h1", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    lab.advance(1.5)
    lab.remove(b)
    (e,) = events(lab, "revoked")
    assert (str(e.dst_ip), e.ended_by) == ("10.1.0.6", "container b removed")
    assert e.duration == pytest.approx(1.5)
    lab.remove(c)
    lab.advance(20.0)
    assert [x.ended_by for x in events(lab, "revoked")] == [
        "container b removed", "container c removed"]
    assert events(lab, "expired") == []  # revoked, not expired as well


def test_a_detached_port_revokes_its_connections_once(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h1", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.advance(1.0)
    port = PortInfo(lab.port_of(b), b.port, "fe:00:00:00:00:01")
    lab.run(lab.core.port_removed(lab.view(), 1, port, lab.now))
    (e,) = events(lab, "revoked")
    assert e.ended_by == "container b detached (port p2 on host h1 removed)"
    assert e.duration == pytest.approx(1.0)
    lab.remove(b)
    lab.advance(20.0)
    assert len(events(lab, "revoked")) == 1 and events(lab, "expired") == []


def test_removing_a_host_revokes_the_connections_through_it(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.remove_host("h2")
    (e,) = events(lab, "revoked")
    assert (str(e.dst_ip), e.ended_by) == ("10.1.0.6", "host h2 removed")
    assert lab.switches["h1"].flows(1, PRIO_CONNECTION) == []


def test_an_adopted_same_host_pair_keeps_the_direction_that_opened_it(lab: Lab) -> None:
    b = lab.container("h1", "b", "web", "10.1.0.6")
    a = lab.container("h1", "a", "web", "10.1.0.5")  # a lower address, a later port
    pkt = lab.ip_packet(b, "10.1.0.5")
    lab.send("h1", pkt)
    lab.send("h1", lab.reply(pkt, a))
    restart(lab)
    lab.advance(15.0)
    (e,) = events(lab, "expired")
    assert (str(e.src_ip), str(e.dst_ip), e.path) == ("10.1.0.6", "10.1.0.5", "local")
