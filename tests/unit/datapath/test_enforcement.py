"""Policy enforcement in the datapath: decisions turned into flows, on simulated
switches with a conntrack model (see docs/architecture.md, "Policy enforcement")."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from controller.datapath.messages import CT, OFPP_LOCAL, Output
from controller.datapath.tables import (
    PRIO_CONNECTION,
    PRIO_ESTABLISHED,
    PRIO_GRANT,
    PRIO_METERED_MISS,
    PRIO_STATEFUL_DENY,
    T_ROUTE,
    T_STATEFUL,
)
from controller.desired.models import (
    FirewallRule,
    Group,
    Network,
    PairPolicy,
    PublishedPort,
    RuleSource,
)
from tests.unit.flowsim import Lab, Packet

_ids = itertools.count(1)


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2"], idle_timeout=10)
    lab.network("web", "10.1.0.0/24")
    lab.network("db", "172.31.7.0/24")
    return lab


def rule(target: str, action: str, source: RuleSource, protocol: str = "any",
         ports: tuple[str, ...] = (), position: int = 0) -> FirewallRule:
    return FirewallRule(id=f"r{next(_ids)}", target_kind="network", target=target,
                        position=position, action=action, source=source,  # type: ignore[arg-type]
                        protocol=protocol, ports=ports)  # type: ignore[arg-type]


def changed(lab: Lab) -> None:
    lab.run(lab.core.policy_changed(lab.view()))


def open_flows(lab: Lab, host: str) -> list:
    return lab.switches[host].flows(T_ROUTE, PRIO_CONNECTION)


def stateful(lab: Lab, host: str, prio: int | None = None) -> list:
    """Per-connection flows of table 2 (not the misses, plain or metered)."""
    return [
        f for f in lab.switches[host].flows(T_STATEFUL, prio) if f.priority > PRIO_METERED_MISS
    ]


def deliver(lab: Lab, host: str, pkt: Packet) -> str:
    """Send pkt; where it went.  A packet the controller decided on is where its
    resubmission went (stateful) or else where the same packet goes next."""
    resent = len(lab.resubmitted)
    v = lab.send(host, pkt)
    if v.kind == "controller":
        v = lab.resubmitted[-1][1] if len(lab.resubmitted) > resent else lab.send(host, pkt)
    return f"{v.kind}:{v.port}" if v.kind == "output" else v.kind


def test_fully_open_pair_keeps_the_cheap_pair_flows(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.tcp_packet(a, "10.1.0.6", 80))
    assert len(open_flows(lab, "h1")) == 2 and stateful(lab, "h1") == []
    assert lab.core.state.pairs[frozenset((a.ip, ipaddress.IPv4Address("10.1.0.6")))].mode \
        == "open"


def test_port_rule_allows_one_port_statefully_across_hosts(lab: Lab) -> None:
    c = lab.container("h1", "c", "db", "172.31.7.9")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_rule(rule("web", "allow", RuleSource(kind="network", value="db"), "tcp",
                            ("80",)))
    syn = lab.tcp_packet(c, "10.1.0.6", 80)
    assert deliver(lab, "h1", syn) == f"output:{OFPP_LOCAL}"
    assert open_flows(lab, "h1") == []
    grants = stateful(lab, "h1", PRIO_GRANT)
    assert any(dict(f.match).get("tcp_dst") == 80 and isinstance(f.actions[0], CT)
               and f.actions[0].commit for f in grants)
    assert lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12"}
    # h2 receives it from its kernel, commits it too and delivers it
    arriving = dict(syn, in_port=OFPP_LOCAL)
    assert deliver(lab, "h2", arriving) == f"output:{lab.port_of(b)}"
    # the reply passes as established on both hosts
    answer = lab.reply(syn, b)
    assert deliver(lab, "h2", answer) == f"output:{OFPP_LOCAL}"
    assert deliver(lab, "h1", dict(answer, in_port=OFPP_LOCAL)) == f"output:{lab.port_of(c)}"
    # another port is denied, port-specifically, and stays in the switch
    ins = lab.core.state.counters.packet_ins
    other = lab.tcp_packet(c, "10.1.0.6", 22)
    assert lab.send("h1", other).kind == "controller"
    deny = stateful(lab, "h1", PRIO_STATEFUL_DENY)
    assert len(deny) == 1 and dict(deny[0].match).get("tcp_dst") == 22
    for _ in range(100):
        assert lab.send("h1", other).kind == "drop"
    assert lab.core.state.counters.packet_ins == ins + 1
    # ... and the allowed port still passes
    assert deliver(lab, "h1", lab.tcp_packet(c, "10.1.0.6", 80, sport=40001)).startswith("output")
    # b may not open a connection to c (web -> db is denied)
    assert lab.send("h2", lab.tcp_packet(b, "172.31.7.9", 80, sport=5555)).kind == "controller"
    assert stateful(lab, "h2", PRIO_STATEFUL_DENY)


def test_a_rule_denying_new_connections_does_not_cut_replies(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    c = lab.container("h1", "c", "db", "172.31.7.9")
    lab.index.put_group(Group(name="g", networks=("web", "db")))
    lab.index.put_rule(rule("db", "deny", RuleSource(kind="any")))
    # a -> c is denied by the rule on db ...
    assert lab.send("h1", lab.ip_packet(a, "172.31.7.9")).kind == "controller"
    assert deliver(lab, "h1", lab.ip_packet(a, "172.31.7.9")) == "drop"
    # ... but c -> a is allowed (group), and a's replies to c pass the deny flow
    syn = lab.tcp_packet(c, "10.1.0.5", 5000)
    assert deliver(lab, "h1", syn) == f"output:{lab.port_of(a)}"
    answer = lab.reply(syn, a)
    assert deliver(lab, "h1", answer) == f"output:{lab.port_of(c)}"
    for _ in range(10):
        assert lab.send("h1", answer).kind == "output"
    # a new connection from a is still denied
    assert deliver(lab, "h1", lab.tcp_packet(a, "172.31.7.9", 80)) == "drop"


def test_disconnect_revokes_flows_and_routes_on_every_host_at_once(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.send("h1", lab.ip_packet(a, "10.1.0.6"))
    assert open_flows(lab, "h1") and open_flows(lab, "h2") and lab.agents["h2"].via()
    lab.index.put_pair_policy(PairPolicy(a="a", b="b", action="deny"))
    changed(lab)
    for host in ("h1", "h2"):
        assert open_flows(lab, host) == [] and stateful(lab, host) == []
        assert lab.agents[host].via() == {}
    assert lab.core.live_routes(lab.view(), lab.now) == []
    assert deliver(lab, "h1", lab.ip_packet(a, "10.1.0.6")) == "drop"
    # connect again: the cached denial goes at once, the next packet passes
    lab.index.put_pair_policy(PairPolicy(a="a", b="b", action="allow"))
    changed(lab)
    assert stateful(lab, "h1", PRIO_STATEFUL_DENY) == []
    assert deliver(lab, "h1", lab.ip_packet(a, "10.1.0.6")) == f"output:{OFPP_LOCAL}"


def test_removing_a_network_from_a_group_revokes(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h2", "c", "db", "172.31.7.9")
    lab.index.put_group(Group(name="g", networks=("web", "db")))
    assert deliver(lab, "h1", lab.ip_packet(a, "172.31.7.9")) == f"output:{OFPP_LOCAL}"
    lab.index.put_group(Group(name="g", networks=("web",)))
    changed(lab)
    assert open_flows(lab, "h1") == [] and lab.agents["h1"].via() == {}
    assert deliver(lab, "h1", lab.ip_packet(a, "172.31.7.9")) == "drop"


def test_revoked_port_cuts_its_established_connection_but_not_the_others(lab: Lab) -> None:
    c = lab.container("h1", "c", "db", "172.31.7.9")
    b = lab.container("h1", "b", "web", "10.1.0.6")
    allow80 = rule("web", "allow", RuleSource(kind="network", value="db"), "tcp", ("80",), 0)
    allow443 = rule("web", "allow", RuleSource(kind="network", value="db"), "tcp", ("443",), 1)
    lab.index.put_rule(allow80)
    lab.index.put_rule(allow443)
    http, https = lab.tcp_packet(c, "10.1.0.6", 80), lab.tcp_packet(c, "10.1.0.6", 443, 40443)
    assert deliver(lab, "h1", http).startswith("output")
    assert deliver(lab, "h1", https).startswith("output")
    assert lab.send("h1", lab.reply(https, b)).kind == "output"
    # port 80 is revoked while both connections are established
    lab.index.drop_rule(allow80.id)
    changed(lab)
    assert stateful(lab, "h1") == []
    # the revoked connection is cut in both directions (its ct_mark is stale) ...
    assert deliver(lab, "h1", http) == "drop"
    assert deliver(lab, "h1", lab.reply(http, b)) == "drop"
    # ... the other one is picked up again even by a reply that comes first
    assert deliver(lab, "h1", lab.reply(https, b)) == f"output:{lab.port_of(c)}"
    assert lab.send("h1", https).kind == "output"
    assert lab.send("h1", lab.reply(https, b)).kind == "output"


def test_published_port_dnat_rules_and_ingress(lab: Lab) -> None:
    b = lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_published_port(PublishedPort(id="p1", container="b", host_port=8080,
                                               container_port=80))
    # subject to rules: what comes from outside needs a rule that lets it in
    lab.index.put_rule(rule("web", "allow", RuleSource(kind="cidr", value="198.18.0.0/24"),
                            "tcp", ("80",), position=1))
    changed(lab)
    (nat,) = lab.nat["h2"]
    assert (nat.kind, nat.address, nat.port, nat.to, nat.to_port) == (
        "dnat", ipaddress.IPv4Address("198.18.0.12"), 8080, b.ip, 80)
    assert lab.nat["h1"] == []
    # after the host's DNAT: from outside, through the kernel, to b:80
    outside: Packet = {"in_port": OFPP_LOCAL, "eth_type": 0x0800, "eth_src": "aa:00:00:00:00:02",
                       "ipv4_src": "198.18.0.200", "ipv4_dst": "10.1.0.6", "ip_proto": 6,
                       "tcp_src": 33000, "tcp_dst": 80}
    assert deliver(lab, "h2", outside) == f"output:{lab.port_of(b)}"
    answer = lab.reply(outside, b)
    assert deliver(lab, "h2", answer) == f"output:{OFPP_LOCAL}"
    assert lab.agents["h2"].via() == {}
    # an unpublished port is not let in, nor may b open connections outside
    assert deliver(lab, "h2", dict(outside, tcp_dst=81)) == "drop"
    assert deliver(lab, "h2", lab.tcp_packet(b, "198.18.0.200", 80)) == "drop"
    # a deny rule before it revokes
    lab.index.put_rule(rule("web", "deny", RuleSource(kind="cidr", value="198.18.0.0/24")))
    changed(lab)
    assert stateful(lab, "h2") == []
    assert deliver(lab, "h2", dict(outside, tcp_src=33001)) == "drop"


def test_external_network_reaches_outside_through_its_host(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    out = lab.ip_packet(a, "198.18.0.200")
    assert deliver(lab, "h1", out) == "drop"
    web = lab.index.network("web")
    assert web is not None
    lab.index.put_network(web.model_copy(update={"external": True}))
    changed(lab)
    (masq,) = lab.nat["h1"]
    assert masq.kind == "masquerade" and masq.source == web.subnet
    assert web.subnet in masq.exclude and len(masq.exclude) == 2
    assert deliver(lab, "h1", out) == f"output:{OFPP_LOCAL}"
    back = dict(lab.reply(out, a), in_port=OFPP_LOCAL, eth_src="aa:00:00:00:00:01")
    back["ipv4_src"] = "198.18.0.200"
    assert deliver(lab, "h1", back) == f"output:{lab.port_of(a)}"
    # an address inside daolinet that is no container is not "outside"
    assert deliver(lab, "h1", lab.ip_packet(a, "172.31.7.77")) == "drop"
    # the outside cannot open connections to a
    assert deliver(lab, "h1", dict(back, ip_proto=6, tcp_src=1, tcp_dst=22)) == "drop"
    # turned off again: revoked
    lab.index.put_network(web)
    changed(lab)
    assert stateful(lab, "h1") == [] and lab.nat["h1"] == []


def test_stateful_pair_survives_controller_restart(lab: Lab) -> None:
    from controller.datapath.core.facade import Core
    from controller.datapath.state import CoreState

    c = lab.container("h1", "c", "db", "172.31.7.9")
    lab.container("h2", "b", "web", "10.1.0.6")
    lab.index.put_rule(rule("web", "allow", RuleSource(kind="network", value="db"), "tcp",
                            ("80",), position=1))
    deliver(lab, "h1", lab.tcp_packet(c, "10.1.0.6", 80))
    pair = frozenset((c.ip, ipaddress.IPv4Address("10.1.0.6")))
    before = lab.core.state.pairs[pair]
    lab.core = Core(CoreState(idle_timeout=10))
    for host in ("h1", "h2"):
        lab.connect(host)
    after = lab.core.state.pairs[pair]
    assert (after.mode, after.mark) == (before.mode, before.mark)
    assert after.grants == before.grants
    assert lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12"}
    # revocation still works on the adopted state
    lab.index.put_rule(rule("web", "deny", RuleSource(kind="any"), position=0))
    changed(lab)
    assert stateful(lab, "h1") == [] and lab.agents["h1"].via() == {}


def test_established_flows_match_the_pairs_mark(lab: Lab) -> None:
    c = lab.container("h1", "c", "db", "172.31.7.9")
    lab.container("h1", "b", "web", "10.1.0.6")
    lab.index.put_rule(rule("web", "allow", RuleSource(kind="any"), "icmp"))
    assert deliver(lab, "h1", lab.ip_packet(c, "10.1.0.6")).startswith("output")
    est = stateful(lab, "h1", PRIO_ESTABLISHED)
    marks = {dict(f.match)["ct_mark"] for f in est}
    assert len(est) == 2 and len(marks) == 1
    assert all(Output(OFPP_LOCAL) not in f.actions for f in est)


def test_network_record_default_is_not_external() -> None:
    net = Network(id="n", name="n", subnet=ipaddress.IPv4Network("10.9.0.0/24"),
                  gateway=ipaddress.IPv4Address("10.9.0.1"))
    assert net.external is False
