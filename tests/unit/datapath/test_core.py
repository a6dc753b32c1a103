"""The core against simulated switches and agents: packets in, verdicts out."""

from __future__ import annotations

import ipaddress

import pytest

from controller.datapath.core.facade import Core
from controller.datapath.core.setup import SETUP_TIMEOUT
from controller.datapath.events import PacketInfo
from controller.datapath.messages import OFPP_IN_PORT, OFPP_LOCAL, Output, SetField
from controller.datapath.state import CoreState
from controller.datapath.tables import (
    PRIO_CONNECTION,
    PRIO_STATEFUL_DENY,
    T_ROUTE,
    T_STATEFUL,
    cookie_kind,
)
from controller.desired.models import GATEWAY_MAC
from controller.desired.policy import Decision, Verdict
from tests.unit.flowsim import Lab

IP = ipaddress.IPv4Address


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2", "h3"], idle_timeout=10)
    lab.network("web", "10.1.0.0/24")
    lab.network("db", "172.31.7.0/24")
    return lab


def conn_flows(lab: Lab, host: str) -> list:
    return lab.switches[host].flows(T_ROUTE, PRIO_CONNECTION)


def test_arp_request_is_answered_with_gateway_mac_on_its_own_port(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    arp = {
        "in_port": lab.port_of(a),
        "eth_type": 0x0806,
        "eth_src": a.mac,
        "eth_dst": "ff:ff:ff:ff:ff:ff",
        "arp_op": 1,
        "arp_sha": a.mac,
        "arp_spa": "10.1.0.5",
        "arp_tha": "00:00:00:00:00:00",
        "arp_tpa": "10.1.0.1",
    }
    v = lab.switches["h1"].process(arp)
    assert v.kind == "output" and v.port == lab.port_of(a)
    reply = v.packet
    assert reply is not None
    assert reply["arp_op"] == 2
    assert reply["arp_sha"] == GATEWAY_MAC and reply["eth_src"] == GATEWAY_MAC
    assert reply["arp_spa"] == "10.1.0.1" and reply["arp_tpa"] == "10.1.0.5"
    assert reply["arp_tha"] == a.mac and reply["eth_dst"] == a.mac


def test_arp_from_kernel_and_non_ip_traffic_are_dropped(lab: Lab) -> None:
    sw = lab.switches["h1"]
    assert sw.process({"in_port": OFPP_LOCAL, "eth_type": 0x0806, "arp_op": 1}).kind == "drop"
    assert sw.process({"in_port": 1, "eth_type": 0x86DD}).kind == "drop"
    assert sw.process({"in_port": 1, "eth_type": 0x0806, "arp_op": 2}).kind == "drop"


def test_nothing_is_installed_before_the_first_packet(lab: Lab) -> None:
    lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    for host in ("h1", "h2"):
        assert conn_flows(lab, host) == []
        assert lab.agents[host].via() == {}


def test_same_host_connection_is_one_hop_port_to_port(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h1", "b", "web", "10.1.0.6")
    assert lab.send("h1", lab.ip_packet(a, "10.1.0.6")).kind == "controller"
    # The first packet is sent on, to b, with the gateway as its source MAC.
    host, out = lab.packet_outs[-1]
    assert host == "h1"
    assert Output(lab.port_of(b)) in out.actions
    assert SetField("eth_src", GATEWAY_MAC) in out.actions
    assert SetField("eth_dst", b.mac) in out.actions
    # The rest go switch-only, both ways, and need no kernel route.
    v = lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert v.kind == "output" and v.port == lab.port_of(b)
    back = lab.send("h1", lab.ip_packet(b, "10.1.0.5"))
    assert back.kind == "output" and back.port == lab.port_of(a)
    assert lab.agents["h1"].via() == {}


def test_cross_host_first_packet_waits_for_both_routes_then_is_delivered(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    for agent in lab.agents.values():
        agent.auto_ack = False
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))  # a retransmission while waiting
    assert conn_flows(lab, "h1") == [] and conn_flows(lab, "h2") == []
    assert lab.packet_outs == []
    lab.release("h1")
    assert lab.packet_outs == [], "must wait for the destination host too"
    lab.release("h2")
    # Both queued packets go to the kernel of h1, which now has the route.
    assert [h for h, _ in lab.packet_outs] == ["h1", "h1"]
    assert all(Output(OFPP_LOCAL) in po.actions for _, po in lab.packet_outs)
    assert lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12"}
    assert lab.agents["h2"].via() == {"10.1.0.5": "198.18.0.11"}
    assert len(conn_flows(lab, "h1")) == 2 and len(conn_flows(lab, "h2")) == 2
    assert lab.core.state.counters.setups == 1


def test_cross_host_path_goes_through_both_kernels(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    v = lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert v.kind == "output" and v.port == OFPP_LOCAL
    assert v.packet and v.packet["eth_dst"] == "aa:00:00:00:00:01"  # h1's LOCAL MAC
    # h2's kernel hands it to br-dl; the flow delivers it to b.
    arriving = dict(lab.ip_packet(a, "10.1.0.6"), in_port=OFPP_LOCAL)
    v = lab.send("h2", arriving)
    assert v.kind == "output" and v.port == lab.port_of(b)
    assert v.packet and v.packet["eth_dst"] == b.mac and v.packet["eth_src"] == GATEWAY_MAC
    # The reply path exists before the reply is sent.
    back = lab.send("h2", lab.ip_packet(b, "10.1.0.5"))
    assert back.kind == "output" and back.port == OFPP_LOCAL


def test_idle_connection_expires_everywhere_and_comes_back(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert lab.agents["h1"].via()
    lab.advance(5)
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))  # keeps a->b alive on h1
    lab.advance(6)
    # h1's a->b flow is still in use, so h1 keeps the route to b ...
    assert lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12"}
    # ... but h2's flows idled out, and with them h2's route to a.
    assert lab.agents["h2"].via() == {}
    lab.advance(10)
    for host in ("h1", "h2"):
        assert conn_flows(lab, host) == []
        assert lab.agents[host].via() == {}
    assert lab.core.live_routes(lab.view(), lab.now) == []
    assert lab.send("h1", lab.ip_packet(a, "10.1.0.6")).kind == "controller"
    assert len(conn_flows(lab, "h1")) == 2 and lab.agents["h1"].via()


def test_different_networks_are_denied_and_the_flood_stays_in_the_switch(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "c", "db", "172.31.7.9")
    assert lab.send("h1", lab.ip_packet(a, "172.31.7.9")).kind == "controller"
    deny = lab.switches["h1"].flows(T_STATEFUL, PRIO_STATEFUL_DENY)
    assert len(deny) == 1 and deny[0].actions == () and deny[0].idle_timeout > 0
    ins = lab.core.state.counters.packet_ins
    for _ in range(1000):
        assert lab.send("h1", lab.ip_packet(a, "172.31.7.9")).kind == "drop"
    assert lab.core.state.counters.packet_ins == ins
    assert lab.packet_outs == [] and lab.agents["h1"].via() == {}
    # The drop flow is short-lived: after its hold time the pair is decided again.
    lab.advance(lab.core.state.deny_hold)
    assert lab.switches["h1"].flows(T_STATEFUL, PRIO_STATEFUL_DENY) == []
    # The drop is counted: the packets of the expired deny flow.
    assert lab.core.state.counters.denied_packets == 1000
    assert lab.core.host_counters("h1").denials == 1


def test_spoofed_source_is_dropped_at_its_port_and_counted(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    for field, value in (("ipv4_src", "10.1.0.7"), ("eth_src", "02:da:0a:01:00:07")):
        pkt = lab.ip_packet(a, "10.1.0.6")
        pkt[field] = value
        assert lab.send("h1", pkt).kind == "drop"
    assert lab.core.state.counters.packet_ins == 0
    assert conn_flows(lab, "h1") == []
    lab.run(lab.core.flows_dumped(lab.view(), 1, lab.switches["h1"].dump(), lab.now))
    assert lab.core.host_counters("h1").spoofed_packets == 2
    # its own addresses pass
    assert lab.send("h1", lab.ip_packet(a, "10.1.0.6")).kind == "controller"


def test_unknown_destination_is_denied(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.send("h1", lab.ip_packet(a, "10.1.0.99"))
    assert conn_flows(lab, "h1") == [] and lab.packet_outs == []


def test_stale_flow_removed_of_an_older_incarnation_is_ignored(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    old = conn_flows(lab, "h1")[0]
    # The pair is set up again (e.g. the reverse flow expired and a packet came).
    lab.core.state.pending.clear()
    lab.run(lab.core._setups._setup(  # drive a re-install directly
        lab.core.state.switches[1], a, lab.index.endpoint("b"),
        PacketInfo(lab.port_of(a), a.mac, a.ip, IP("10.1.0.6"), 1, b"x"), "open",
        (a.ip, None, None), lab.now, Decision(Verdict.ALLOW, "same network web", "network"),
        False,
    ))
    assert old not in conn_flows(lab, "h1")
    fx = lab.core.flow_removed(lab.view(), 1, old.cookie, 0)
    assert fx.deltas == [] and lab.agents["h1"].via()


def test_setup_fails_cleanly_when_an_agent_does_not_answer(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.agents["h2"].auto_ack = False
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.advance(SETUP_TIMEOUT + 0.1)
    lab.run(lab.core.tick(lab.view(), lab.now))
    assert lab.core.state.pending == {}
    assert conn_flows(lab, "h1") == [] and lab.packet_outs == []
    assert lab.agents["h1"].via() == {}, "the route asked for is retracted"
    assert lab.core.state.counters.failed_setups == 1


def test_a_reconnecting_agents_snapshot_answers_the_setups_waiting_for_it(lab: Lab) -> None:
    """h2's agent went away with a route delta unanswered (a replica took h2 over,
    say); when it comes back, its snapshot holds that route, and acknowledging the
    snapshot releases the waiting setup at once instead of at the setup timeout."""
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.agents["h2"].auto_ack = False
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert lab.core.state.pending and lab.packet_outs == []
    lab.agents["h2"].held = []  # lost with the old stream
    lab.advance(1.0)
    (snap,) = lab.core.snapshot(lab.view(), "h2").snapshots
    assert IP("10.1.0.5") in {r.dst for r in snap.routes}
    lab.run(lab.core.routes_acked(lab.view(), "h2", snap.token, lab.now))
    assert lab.core.state.pending == {}
    assert [h for h, _ in lab.packet_outs] == ["h1"]
    assert lab.core.state.counters.failed_setups == 0


def test_nack_fails_the_setup(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.agents["h1"].auto_ack = False
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.release("h1", ok=False)
    assert lab.core.state.pending == {} and conn_flows(lab, "h2") == []
    assert lab.agents["h2"].via() == {}


def test_removed_endpoint_takes_its_connections_and_routes_at_once(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert lab.agents["h2"].routes.get(b.ip) is not None  # b's local route
    lab.remove(b)
    for host in ("h1", "h2"):
        assert conn_flows(lab, host) == []
        assert lab.agents[host].via() == {}
    assert b.ip not in lab.agents["h2"].routes


def test_icmp_from_a_host_on_the_path_reaches_the_container(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    pkt = {
        "in_port": OFPP_LOCAL,
        "eth_type": 0x0800,
        "eth_src": "aa:00:00:00:00:01",
        "ipv4_src": "198.18.0.12",
        "ipv4_dst": "10.1.0.5",
        "ip_proto": 1,
    }
    lab.send("h1", pkt)
    host, out = lab.packet_outs[-1]
    assert host == "h1" and Output(lab.port_of(a)) in out.actions
    # A non-ICMP packet from a host address is not let in.
    lab.send("h1", dict(pkt, ip_proto=6))
    assert len(lab.packet_outs) == 1


def test_controller_restart_rebuilds_state_without_disturbing_flows(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    before = {h: list(conn_flows(lab, h)) for h in ("h1", "h2")}
    routes_before = {h: lab.agents[h].via() for h in ("h1", "h2")}
    # A new controller process: fresh core state, same desired state.
    lab.core = Core(CoreState(idle_timeout=10))
    for host in ("h1", "h2", "h3"):
        lab.connect(host)
    assert {h: list(conn_flows(lab, h)) for h in ("h1", "h2")} == before
    assert {h: lab.agents[h].via() for h in ("h1", "h2")} == routes_before
    rows = lab.core.live_routes(lab.view(), lab.now)
    assert [(r["src"], r["dst"], r["path"]) for r in rows] == [("a", "b", "underlay")]
    # New connections get cookies that do not collide with the adopted ones.
    lab.container("h1", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(lab.index.endpoint("c"), "10.1.0.6"))  # type: ignore[arg-type]
    cookies = [f.cookie for f in conn_flows(lab, "h1")]
    assert len(set(cookies)) == len(cookies)
    assert all(cookie_kind(c) == 0xD1 for c in cookies)


def test_lost_flow_removed_is_caught_by_the_periodic_dump(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    # The switch drops the flows without telling us (e.g. an operator's del-flows).
    lab.switches["h1"].entries = [e for e in lab.switches["h1"].entries if e.flow.table != 1
                                  or e.flow.priority != PRIO_CONNECTION]
    lab.advance(3)
    lab.run(lab.core.flows_dumped(lab.view(), 1, lab.switches["h1"].dump(1), lab.now))
    assert lab.agents["h1"].via() == {}


def test_live_routes_report_hosts_path_age_and_idle(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    lab.container("h2", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    lab.now += 4
    rows = lab.core.live_routes(lab.view(), lab.now)
    assert [(r["src"], r["dst"], r["path"], r["age"]) for r in rows] == [
        ("a", "b", "local", 4.0),
        ("a", "c", "underlay", 4.0),
    ]
    assert lab.core.live_routes(lab.view(), lab.now, host="h2")[0]["dst_host"] == "h2"


def test_arp_responder_swaps_addresses_through_a_register() -> None:
    from controller.datapath.tables import arp_responder_actions

    actions = arp_responder_actions()
    assert actions[-1] == Output(OFPP_IN_PORT)
    moves = [a for a in actions if not isinstance(a, (SetField, Output))]
    assert [(m.src, m.dst) for m in moves][-3:] == [
        ("arp_tpa", "reg0"),
        ("arp_spa", "arp_tpa"),
        ("reg0", "arp_spa"),
    ]


def test_a_flood_reaching_the_switch_before_the_drop_flow_is_metered(lab: Lab) -> None:
    """The switch sees 10,000 denied packets before the controller has answered the
    first: the container's PacketIn meter lets through only its burst."""
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "c", "db", "172.31.7.9")
    sw = lab.switches["h1"]
    verdicts = [sw.process(lab.ip_packet(a, "172.31.7.9")).kind for _ in range(10_000)]
    to_controller = verdicts.count("controller")
    assert to_controller == lab.core.state.packet_in_burst
    assert verdicts.count("metered") == 10_000 - to_controller
    # A second later the budget is back, for this container's next new peers.
    lab.advance(1.0)
    b = lab.container("h1", "b", "web", "10.1.0.6")
    assert sw.process(lab.ip_packet(a, str(b.ip))).kind == "controller"


def test_a_port_meter_is_made_before_its_flows_and_goes_with_its_port(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    sw = lab.switches["h1"]
    port = lab.port_of(a)
    assert port in sw.meters
    metered = [f for f in sw.flows(2) if any(getattr(x, "meter_id", None) == port
                                              for x in f.actions)]
    assert len(metered) == 1
    # A controller restart re-makes meters and metered flows without an error.
    lab.connect("h1")
    assert port in sw.meters
    lab.remove(a)
    assert port not in sw.meters
    assert not [f for f in sw.flows(2) if any(getattr(x, "meter_id", None) == port
                                               for x in f.actions)]


def test_a_removed_host_leaves_no_switch_flow_or_route_behind(lab: Lab) -> None:
    """Host removal (forced, with its container): every connection to it goes from
    the other switches, with the routes it needed; the core keeps nothing of its
    switch, which from now on is an unknown bridge; the other hosts still talk."""
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    c = lab.container("h3", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12", "10.1.0.7": "198.18.0.13"}
    lab.remove_host("h3")
    state = lab.core.state
    assert 3 not in state.switches and "h3" not in state.routes
    assert "h3" not in state.dpid_of, "its switch left the host index too"
    assert all(c.ip not in r.pair for sw in state.switches.values() for r in sw.flows.values())
    assert not state.pair_has_flows(frozenset((a.ip, c.ip))), "no pair count through it is left"
    assert lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12"}, "the route to c goes"
    assert [f for f in conn_flows(lab, "h1") if str(c.ip) in str(f.match)] == []
    # its switch, still connected, gets nothing: a PacketIn from it is ignored
    assert lab.packet_in("h3", lab.ip_packet(c, "10.1.0.5")).messages == []
    assert lab.core.switch_connected(lab.view(), 3).messages == []
    # the others' connection lives on, and a new one is set up
    assert lab.send("h1", lab.ip_packet(a, "10.1.0.6")).kind != "controller"
    lab.send("h2", lab.ip_packet(b, "10.1.0.5"))
    assert lab.agents["h2"].via() == {"10.1.0.5": "198.18.0.11"}
