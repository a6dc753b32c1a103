"""What keeps the core's work proportional to what changed (issue 22): pair state
counted per flow, live-connection counts in one pass, the periodic flow dump
spread over ticks with suspect switches first, and a burst of FlowRemoved notices
synced once per host."""

from __future__ import annotations

import ipaddress

import pytest

from controller.datapath.core.facade import Core
from controller.datapath.effects import KernelRouteDelta
from controller.datapath.messages import RequestFlowStats
from controller.datapath.state import CoreState, PairFlows
from controller.datapath.tables import PRIO_CONNECTION, T_ROUTE
from tests.unit.flowsim import Lab

IP = ipaddress.IPv4Address


def one_dump_per_tick(state: CoreState) -> Core:
    state.dumps_per_tick = 1
    return Core(state)


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2", "h3"], idle_timeout=10, make_core=one_dump_per_tick)
    lab.network("web", "10.1.0.0/24")
    return lab


def dumped(lab: Lab) -> list[int]:
    """The switches one tick asks for their flows."""
    fx = lab.core.tick(lab.view(), lab.now)
    return [dpid for dpid, m in fx.messages if isinstance(m, RequestFlowStats)]


def test_a_pair_is_forgotten_when_its_last_flow_goes_and_kept_until_then(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    pair = frozenset((a.ip, IP("10.1.0.6")))
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert pair in lab.core.state.pairs and lab.core.state.pair_has_flows(pair)
    lab.advance(5)
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))  # keeps h1's a->b flow in use
    lab.advance(6)  # h2's flows and h1's b->a flow expired, one FlowRemoved each
    assert lab.switches["h2"].flows(T_ROUTE, PRIO_CONNECTION) == []
    assert pair in lab.core.state.pairs, "one flow is left: the pair stays"
    lab.advance(10)
    assert not lab.core.state.pair_has_flows(pair)
    assert pair not in lab.core.state.pairs


def test_a_disconnected_switch_takes_its_pairs_with_it(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert lab.core.state.pairs
    lab.run(lab.core.switch_disconnected(lab.view(), 1))
    assert lab.core.state.pairs == {}
    lab.connect("h1")  # its flows are still there: the dump adopts them again
    assert len(lab.core.state.pairs) == 1


def test_live_counts_agree_with_the_live_routes(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    lab.container("h2", "c", "web", "10.1.0.7")
    d = lab.container("h3", "d", "web", "10.1.0.8")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    lab.agents["h1"].auto_ack = False  # d -> a waits for h1's route: not live yet
    lab.send("h3", lab.ip_packet(d, "10.1.0.5"))
    assert lab.core.state.pending
    rows = lab.core.live_routes(lab.view(), lab.now)
    total, per_host = lab.core.live_counts(lab.view())
    assert total == len(rows) == 2
    for host in ("h1", "h2", "h3"):
        assert per_host.get(host, 0) == len(lab.core.live_routes(lab.view(), lab.now, host))
    assert per_host == {"h1": 2, "h2": 1}


def test_the_periodic_dump_goes_round_the_switches(lab: Lab) -> None:
    seen = []
    for _ in range(6):
        lab.now += 2
        seen += dumped(lab)
    assert sorted(seen) == [1, 1, 2, 2, 3, 3], "one switch per tick, each in turn"


def test_every_switch_is_dumped_each_tick_while_they_fit_the_budget() -> None:
    lab = Lab(["h1", "h2", "h3"])
    lab.now += 2
    assert sorted(dumped(lab)) == [1, 2, 3]


def test_a_packet_missing_an_installed_flow_makes_its_switch_dumped_next(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    lab.now += 2
    assert dumped(lab) == [1]
    # h1 loses its flows without a FlowRemoved (an operator's del-flows, say).
    sw = lab.switches["h1"]
    sw.entries = [e for e in sw.entries if e.flow.priority != PRIO_CONNECTION]
    lab.now += 3
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))  # decided again, and suspect
    assert lab.core.state.switches[1].suspect
    assert dumped(lab) == [1], "the suspect switch goes before the others"
    assert not lab.core.state.switches[1].suspect
    lab.now += 2
    assert dumped(lab) == [2], "then the rotation goes on"


def test_an_answer_goes_to_the_setups_waiting_for_it_and_no_other(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    c = lab.container("h3", "c", "web", "10.1.0.7")
    for host in ("h1", "h2", "h3"):
        lab.agents[host].auto_ack = False
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))  # waits for h1 and h2
    lab.send("h3", lab.ip_packet(c, "10.1.0.5"))  # waits for h3 and h1
    assert len(lab.core.state.pending) == 2
    lab.release("h2")
    assert len(lab.core.state.pending) == 2, "both still wait for h1"
    lab.release("h3", ok=False)  # c -> a fails; a -> b still waits
    assert list(lab.core.state.pending) == [frozenset((a.ip, IP("10.1.0.6")))]
    lab.release("h1")
    assert lab.core.state.pending == {}
    assert lab.core.state.waiting_on == {}, "nothing is left waiting in the index"
    assert lab.core.state.counters.setups == 1
    assert lab.core.state.counters.failed_setups == 1


def test_a_reconnect_forgets_the_pairs_its_switch_no_longer_holds(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert len(lab.core.state.pairs) == 1
    sw = lab.switches["h1"]  # the switch lost its flows while it reconnected
    sw.entries = [e for e in sw.entries if e.flow.priority != PRIO_CONNECTION]
    lab.connect("h1")  # connected again, with no disconnect seen first
    assert lab.core.state.pairs == {}
    assert not lab.core.state.live


def expire_together(batched: bool) -> tuple[Lab, list[KernelRouteDelta]]:
    """Container a on h1 opens connections to six containers on h2 and h3 at
    once; then all their flows idle out in the same step: a burst of FlowRemoved
    notices on each switch.  The lab and the deltas the burst sent."""
    lab = Lab(["h1", "h2", "h3"], idle_timeout=10)
    lab.batch_removals = batched
    lab.network("web", "10.1.0.0/24")
    a = lab.container("h1", "a", "web", "10.1.0.5")
    peers = [f"10.1.0.{10 + i}" for i in range(6)]
    for i, ip in enumerate(peers):
        lab.container("h2" if i % 2 else "h3", f"b{i}", "web", ip)
    for ip in peers:
        lab.send("h1", lab.ip_packet(a, ip))
    assert len(lab.agents["h1"].via()) == 6
    before = len(lab.deltas)
    lab.advance(11)
    return lab, lab.deltas[before:]


def end_state(lab: Lab) -> tuple[object, ...]:
    return (
        {h: dict(agent.routes) for h, agent in lab.agents.items()},
        {h: sorted(e.flow.cookie for e in sw.entries) for h, sw in lab.switches.items()},
        sorted(tuple(sorted(map(str, p))) for p in lab.core.state.pairs),
        {h: dict(r.announced) for h, r in lab.core.state.routes.items()},
        lab.core.live_counts(lab.view()),
        lab.connections,
    )


def test_a_burst_of_flow_removals_is_one_route_sync_of_its_host_with_the_same_end() -> None:
    one_by_one, deltas_one_by_one = expire_together(batched=False)
    batched, deltas_batched = expire_together(batched=True)
    # One at a time, each of h1's six notices that dropped a route was a delta.
    assert [d.host for d in deltas_one_by_one].count("h1") == 6
    h1 = [d for d in deltas_batched if d.host == "h1"]
    assert len(h1) == 1 and len(h1[0].remove) == 6 and h1[0].add == ()
    assert sorted(d.host for d in deltas_batched) == ["h1", "h2", "h3"]
    assert batched.agents["h1"].via() == {}
    assert end_state(batched) == end_state(one_by_one)
    expired = [e for e in batched.connections if e.event == "expired"]
    assert len(expired) == 6


def test_removing_a_container_tears_its_connections_down_and_syncs_each_host_once(
    lab: Lab,
) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    peers = [lab.container("h2", f"b{i}", "web", f"10.1.0.{10 + i}") for i in range(4)]
    c = lab.container("h3", "c", "web", "10.1.0.20")
    for b in peers:
        lab.send("h1", lab.ip_packet(a, str(b.ip)))
    lab.send("h3", lab.ip_packet(c, str(peers[0].ip)))  # a connection a is no part of
    assert len(lab.core.state.live.pairs_of(a.ip)) == 4
    before, logged = len(lab.deltas), len(lab.connections)
    lab.remove(a)
    deltas = lab.deltas[before:]
    h1 = [d for d in deltas if d.host == "h1" and any(r.kind == "via" for r in d.remove)]
    assert len(h1) == 1, "h1's four routes through h2 go in one delta"
    assert sorted(str(r.dst) for r in h1[0].remove) == [str(b.ip) for b in peers]
    assert len([d for d in deltas if d.host == "h2"]) == 1  # its route back to a
    revoked = [e for e in lab.connections[logged:] if e.event == "revoked"]
    assert sorted(str(e.dst_ip) for e in revoked) == [str(b.ip) for b in peers]
    assert lab.core.state.live.pairs_of(a.ip) == []
    for sw in lab.switches.values():
        assert not [e for e in sw.entries if str(a.ip) in (dict(e.flow.match).get("ipv4_src"),
                                                            dict(e.flow.match).get("ipv4_dst"))]
    assert lab.core.state.live.pairs_of(c.ip) == [frozenset((c.ip, peers[0].ip))]
    assert lab.agents["h3"].via() == {str(peers[0].ip): "198.18.0.12"}


def test_the_pairs_of_an_address_follow_their_flows() -> None:
    live = PairFlows()
    ab = frozenset((IP("10.0.0.1"), IP("10.0.0.2")))
    ac = frozenset((IP("10.0.0.1"), IP("10.0.0.3")))
    live.add(ab, 2)
    live.add(ac)
    assert live.pairs_of(IP("10.0.0.1")) == [ab, ac] and live.pairs_of(IP("10.0.0.3")) == [ac]
    live.remove(ab)
    assert ab in live.pairs_of(IP("10.0.0.2")), "one flow left"
    live.remove(ab)
    live.remove(ac)
    assert live.pairs_of(IP("10.0.0.1")) == [] and len(live) == 0
