"""Masters spread over replicas: one core per replica, each writing only to the
switches and agents of its own hosts (the Lab asserts that on every effect), and
the route needs they export to each other (controller/datapath/needs.py)."""

from __future__ import annotations

import ipaddress

from controller.datapath.messages import OFPP_LOCAL, Output, PacketOut
from controller.datapath.needs import ImportDone
from controller.datapath.tables import PRIO_CONNECTION, PRIO_GRANT, T_ROUTE, T_STATEFUL
from controller.desired.models import Host, PairPolicy, RuleSource
from tests.unit.datapath.test_enforcement import deliver, rule
from tests.unit.datapath.test_sites import MESH
from tests.unit.flowsim import Lab, Packet

IP = ipaddress.IPv4Address


def spread_lab(owners: dict[str, str], sites: bool = False) -> Lab:
    lab = Lab(list(owners), idle_timeout=10, owners=owners)
    if sites:
        for i, m in enumerate(MESH, start=1):
            h = lab.index.host(m.name)
            assert h is not None
            lab.index.put_host(Host(**{**h.model_dump(), **m.model_dump(), "dpid": i}))
    lab.network("web", "10.1.0.0/24")
    lab.network("db", "172.31.7.0/24")
    return lab


def flows(lab: Lab, host: str) -> list:
    return lab.switches[host].flows(T_ROUTE, PRIO_CONNECTION)


def routes(lab: Lab, host: str) -> dict[str, tuple[str, str]]:
    return {str(d): (r.kind, str(r.via)) for d, r in lab.agents[host].routes.items()
            if r.kind != "local"}


def delivered_to(lab: Lab, host: str, port: int, since: int) -> bool:
    return any(
        h == host and isinstance(po, PacketOut) and Output(port) in po.actions
        for h, po in lab.packet_outs[since:]
    )


def cross(lab: Lab, src: str, dst: str, pkt: Packet) -> str:
    """The packet `src`'s switch sent to LOCAL, through both kernels into `dst`'s
    switch; where it went there (a PacketIn counts where the controller sent it)."""
    sent, resent = len(lab.packet_outs), len(lab.resubmitted)
    v = lab.through_kernels(src, dst, pkt)
    if v.kind == "controller" and len(lab.resubmitted) > resent:
        v = lab.resubmitted[-1][1]  # a stateful packet took the tables again
    elif v.kind == "controller":
        outs = [po for h, po in lab.packet_outs[sent:] if h == dst]
        ports = [a.port for po in outs for a in po.actions if isinstance(a, Output)]
        return f"output:{ports[-1]}" if ports else "controller"
    return f"{v.kind}:{v.port}" if v.kind == "output" else v.kind


def test_same_site_pair_is_set_up_in_halves_by_each_switchs_master() -> None:
    lab = spread_lab({"h1": "c0", "h2": "c1"})
    c0, c1 = lab.cores["c0"], lab.cores["c1"]
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    first = lab.ip_packet(a, "10.1.0.6")
    lab.hold_exports = True
    sent = len(lab.packet_outs)
    assert lab.send("h1", first).kind == "controller"
    assert c0.state.pending and len(lab.packet_outs) == sent  # waits for h2's route
    lab.hold_exports = False
    lab.deliver_exports()
    assert not c0.state.pending and delivered_to(lab, "h1", OFPP_LOCAL, sent)
    # c0 installed its switch's half only, and h1's route to b; h2 got a's route
    # from c0's export (c1 imported it), so h2's kernel can answer a packet of a
    # that expires there (traceroute) before h2's switch has seen the connection
    assert len(flows(lab, "h1")) == 2 and flows(lab, "h2") == []
    assert routes(lab, "h1") == {"10.1.0.6": ("via", "198.18.0.12")}
    assert routes(lab, "h2") == {"10.1.0.5": ("via", "198.18.0.11")}
    assert c0.state.counters.setups == 1
    # the first packet reaches h2 from its kernel: c1 sets up h2's half and delivers it
    assert cross(lab, "h1", "h2", first) == f"output:{lab.port_of(b)}"
    assert len(flows(lab, "h2")) == 2
    assert routes(lab, "h2") == {"10.1.0.5": ("via", "198.18.0.11")}
    assert c1.state.counters.setups == 1
    # both directions now pass the switches without the controller
    assert lab.send("h1", first).port == OFPP_LOCAL
    assert lab.through_kernels("h1", "h2", first).port == lab.port_of(b)
    answer = lab.reply(first, b)
    assert lab.send("h2", answer).port == OFPP_LOCAL
    assert lab.through_kernels("h2", "h1", answer).port == lab.port_of(a)
    # each core lists its half; idle, everything goes on both sides
    assert [r["path"] for r in c0.live_routes(lab.view(), lab.now)] == ["underlay"]
    assert [r["path"] for r in c1.live_routes(lab.view(), lab.now)] == ["underlay"]
    lab.advance(11)
    assert flows(lab, "h1") == flows(lab, "h2") == []
    assert routes(lab, "h1") == routes(lab, "h2") == {}
    assert not c0.state.pairs and not c1.state.pairs


def test_cross_site_first_packet_waits_for_the_receivers_allowed_ips() -> None:
    """h3's replica must have put a's address into h3's WireGuard allowed-ips before
    c0 sends the first packet: wireguard-go would drop it otherwise."""
    lab = spread_lab({"h1": "c0", "h2": "c0", "h3": "c1", "h4": "c0", "h5": "c0"},
                     sites=True)
    c0 = lab.cores["c0"]
    a = lab.container("h1", "a", "web", "10.1.0.5")
    c = lab.container("h3", "c", "web", "10.1.0.7")
    lab.hold_exports = True
    sent = len(lab.packet_outs)
    first = lab.ip_packet(a, "10.1.0.7")
    lab.send("h1", first)
    assert c0.state.pending and len(lab.packet_outs) == sent  # waits for h3
    assert [e.host for _, e in lab.exports] == ["h3"] and lab.exports[0][1].adds
    lab.hold_exports = False
    lab.deliver_exports()
    assert not c0.state.pending and delivered_to(lab, "h1", OFPP_LOCAL, sent)
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    assert routes(lab, "h1") == {"10.1.0.7": ("wg", "198.19.0.3")}
    assert cross(lab, "h1", "h3", first) == f"output:{lab.port_of(c)}"
    assert len(flows(lab, "h3")) == 2
    # a keeps sending while nothing arrives at h3 (a link outage): h3's flows idle
    # out, but h3 keeps a's address as long as a's flow on h1 lives
    for _ in range(3):
        lab.advance(5)
        lab.send("h1", first)
    assert flows(lab, "h3") == []
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    # the link is back: a's packets reach h3 and set its half up again
    assert cross(lab, "h1", "h3", first) == f"output:{lab.port_of(c)}"
    lab.advance(11)
    assert routes(lab, "h3") == routes(lab, "h1") == {}
    assert flows(lab, "h1") == flows(lab, "h3") == []


def test_nated_pair_through_a_relay_served_by_a_third_replica() -> None:
    lab = spread_lab({"h1": "c0", "h2": "c0", "h3": "c2", "h4": "c0", "h5": "c1"},
                     sites=True)
    a = lab.container("h4", "a", "web", "10.1.0.5")
    b = lab.container("h5", "b", "web", "10.1.0.6")
    lab.agents["h3"].auto_ack = False  # the relay's agent holds its routes
    first = lab.ip_packet(a, "10.1.0.6")
    sent = len(lab.packet_outs)
    lab.send("h4", first)
    assert lab.cores["c0"].state.pending and len(lab.packet_outs) == sent
    lab.release("h3")
    assert not lab.cores["c0"].state.pending and delivered_to(lab, "h4", OFPP_LOCAL, sent)
    # the relay holds both ends before the first packet goes: b's address towards
    # h5, and a's from h4 (WireGuard on the relay drops a packet from h4 whose
    # source is not in h4's allowed-ips there)
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.4"),
                                 "10.1.0.6": ("wg", "198.19.0.5")}
    # b's replica sets up h5's half from the relayed packet; its replies need the
    # same relay routes, which c1 exports to c2 in turn
    lab.agents["h3"].auto_ack = True
    assert cross(lab, "h4", "h5", first) == f"output:{lab.port_of(b)}"
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.4"),
                                 "10.1.0.6": ("wg", "198.19.0.5")}
    assert routes(lab, "h5") == {"10.1.0.5": ("wg", "198.19.0.4")}
    lab.advance(11)
    for h in ("h3", "h4", "h5"):
        assert routes(lab, h) == {}, h


def test_handing_a_switch_over_keeps_flows_routes_and_the_receivers_needs() -> None:
    """c1 dies: c2 becomes master of h1 (the sender); h3 (served by c0) never loses
    a's allowed-ips in between, although c1 never retracted anything."""
    lab = spread_lab({"h1": "c1", "h2": "c0", "h3": "c0", "h4": "c0", "h5": "c2"},
                     sites=True)
    a = lab.container("h1", "a", "web", "10.1.0.5")
    c = lab.container("h3", "c", "web", "10.1.0.7")
    first = lab.ip_packet(a, "10.1.0.7")
    lab.send("h1", first)
    cross(lab, "h1", "h3", first)
    before = {h: (list(flows(lab, h)), routes(lab, h)) for h in ("h1", "h3")}
    # c1 is gone: nothing of it runs any more; c2 takes h1 with a newer generation
    del lab.cores["c1"]
    lab.owners["h1"] = "c2"
    c0, c2 = lab.cores["c0"], lab.cores["c2"]
    lab.run(c0.set_foreign(lab.view(), {"h1", "h5"}, 2), c0)
    assert routes(lab, "h3") == before["h3"][1]  # still the import of c1's generation
    lab.run(c2.set_foreign(lab.view(), {"h2", "h3", "h4"}, 2), c2)
    lab.connect("h1")
    assert {h: (list(flows(lab, h)), routes(lab, h)) for h in ("h1", "h3")} == before
    # c2 adopted h1's flows and re-exported its needs with generation 2
    table = c0.state.imports["h3"].sets[1]
    assert table.generation == 2 and table.needs == {a.ip: IP("198.19.0.1")}
    # a late export of the dead c1 (generation 1) changes nothing
    late = c0.needs_imported(lab.view(), "h3", 1, 10**9, {1: {}}, 777)
    assert late.imports_done == [ImportDone(777, True)] and late.deltas == []
    assert c0.state.imports["h3"].sets[1].generation == 2
    # traffic goes on, and the new master retracts when it idles
    assert lab.send("h1", first).port == OFPP_LOCAL
    assert cross(lab, "h1", "h3", first) == f"output:{lab.port_of(c)}"
    lab.advance(11)
    assert routes(lab, "h3") == routes(lab, "h1") == {}


def test_an_export_to_a_replica_not_ready_fails_the_setup_and_is_sent_again() -> None:
    lab = spread_lab({"h1": "c0", "h2": "c0", "h3": "c1", "h4": "c0", "h5": "c0"},
                     sites=True)
    c0, c1 = lab.cores["c0"], lab.cores["c1"]
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h3", "c", "web", "10.1.0.7")
    c1.state.switches[3].synced = False  # h3's switch is still being dumped at c1
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert c0.state.counters.failed_setups == 1 and not c0.state.pending
    assert flows(lab, "h1") == [] and routes(lab, "h1") == {}
    c1.state.switches[3].synced = True
    lab.run(c0.tick(lab.view(), lab.now), c0)  # the failed export goes again
    assert c0.state.exports["h3"].sent is not None
    sent = len(lab.packet_outs)
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert delivered_to(lab, "h1", OFPP_LOCAL, sent)
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}


def test_policy_change_revokes_both_halves_each_by_its_master() -> None:
    lab = spread_lab({"h1": "c0", "h2": "c1"})
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    first = lab.ip_packet(a, "10.1.0.6")
    lab.send("h1", first)
    cross(lab, "h1", "h2", first)
    assert flows(lab, "h1") and flows(lab, "h2")
    lab.index.put_pair_policy(PairPolicy(a="a", b="b", action="deny"))
    lab.policy_changed()
    assert flows(lab, "h1") == flows(lab, "h2") == []
    assert routes(lab, "h1") == routes(lab, "h2") == {}
    assert deliver(lab, "h1", first) == "drop"


def test_stateful_pair_across_replicas_commits_on_both_hosts() -> None:
    lab = spread_lab({"h1": "c0", "h2": "c1"})
    c = lab.container("h1", "c", "db", "172.31.7.9")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_rule(rule("web", "allow", RuleSource(kind="network", value="db"), "tcp",
                            ("80",)))
    lab.policy_changed()
    syn = lab.tcp_packet(c, "10.1.0.6", 80)
    assert deliver(lab, "h1", syn) == f"output:{OFPP_LOCAL}"
    assert cross(lab, "h1", "h2", syn) == f"output:{lab.port_of(b)}"
    for host in ("h1", "h2"):
        grants = lab.switches[host].flows(T_STATEFUL, PRIO_GRANT)
        assert any(dict(f.match).get("tcp_dst") == 80 for f in grants), host
    answer = lab.reply(syn, b)
    assert lab.send("h2", answer).port == OFPP_LOCAL
    assert lab.through_kernels("h2", "h1", answer).port == lab.port_of(c)
    # b may still not open anything to c: h2's master denies it in h2's switch
    assert lab.send("h2", lab.tcp_packet(b, "172.31.7.9", 80, sport=5555)).kind == \
        "controller"
    assert routes(lab, "h1") == {"10.1.0.6": ("via", "198.18.0.12")}


def test_a_dead_masters_needs_go_when_its_switch_has_none_under_the_new_master() -> None:
    lab = spread_lab({"h1": "c1", "h2": "c0", "h3": "c0", "h4": "c0", "h5": "c2"},
                     sites=True)
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h3", "c", "web", "10.1.0.7")
    lab.send("h1", lab.ip_packet(a, "10.1.0.7"))
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    # c1 dies, and h1's flows idle out while no controller masters it
    del lab.cores["c1"]
    assert lab.switches["h1"].expire(lab.now + 11)
    lab.owners["h1"] = "c2"
    for name, core in lab.cores.items():
        foreign = {h for h, o in lab.owners.items() if o != name}
        lab.run(core.set_foreign(lab.view(), foreign, 2), core)
    lab.connect("h1")
    # the new master found no flows on h1: its (empty) sets replace c1's on h3
    assert routes(lab, "h3") == {}


def test_rebalancing_a_live_replicas_switch_keeps_what_it_needed_on_its_hosts() -> None:
    """c0 masters sender h1 and receiver h3, then hands h1 to c2: h3 keeps a's
    allowed-ips from c0's own (now handed over) flows until c2's export."""
    lab = spread_lab({"h1": "c0", "h2": "c0", "h3": "c0", "h4": "c0", "h5": "c2"},
                     sites=True)
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h3", "c", "web", "10.1.0.7")
    first = lab.ip_packet(a, "10.1.0.7")
    lab.send("h1", first)
    cross(lab, "h1", "h3", first)
    lab.advance(5)
    lab.send("h1", first)  # a still sends; h3's own flows will idle out first
    lab.advance(6)
    assert flows(lab, "h3") == [] and flows(lab, "h1")
    c0 = lab.cores["c0"]
    lab.owners["h1"] = "c2"
    lab.run(c0.set_foreign(lab.view(), {"h1", "h5"}, 2), c0)
    lab.run(c0.tick(lab.view(), lab.now), c0)  # any later sync of h3 at c0
    lab.run(c0.flows_dumped(lab.view(), 3, lab.switches["h3"].dump(), lab.now), c0)
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    c2 = lab.cores["c2"]
    lab.run(c2.set_foreign(lab.view(), {"h2", "h3", "h4"}, 2), c2)
    lab.connect("h1")
    assert c0.state.imports["h3"].sets[1].generation == 2
    assert routes(lab, "h3") == {"10.1.0.5": ("wg", "198.19.0.1")}
    lab.advance(11)
    assert routes(lab, "h3") == routes(lab, "h1") == {}
