"""Audit mode on simulated switches (docs/architecture.md, "Audit mode"): an audited
pair policy or firewall rule changes no packet, the connection log says what it
would have decided, and enforcing it revokes what it denies at once."""

from __future__ import annotations

import pytest

from controller.datapath.connections import ConnEvent
from controller.desired.models import FirewallRule, PairPolicy, RuleSource
from controller.desired.policy import AuditNote
from tests.unit.datapath.test_enforcement import deliver, open_flows, stateful
from tests.unit.flowsim import Lab


@pytest.fixture
def lab() -> Lab:
    lab = Lab(["h1", "h2"], idle_timeout=10)
    lab.network("web", "10.1.0.0/24")
    lab.network("db", "172.31.7.0/24")
    return lab


def events(lab: Lab, kind: str) -> list[ConnEvent]:
    return [e for e in lab.connections if e.event == kind]


def ssh_rule(action: str = "deny", audit: bool = True, position: int = 0) -> FirewallRule:
    return FirewallRule(id=f"r-ssh-{action}-{position}", target_kind="network", target="web",
                        position=position, action=action,  # type: ignore[arg-type]
                        source=RuleSource(kind="any"), protocol="tcp", ports=("22",),
                        audit=audit)


def enforce(lab: Lab, rule: FirewallRule) -> None:
    """What PATCH /firewalls/rules/{id} {"audit": false} does: one new version of the
    desired state, then the core decides every live pair again."""
    lab.index.put_rule(rule.model_copy(update={"audit": False}))
    lab.policy_changed()


def test_an_audited_deny_rule_changes_no_packet_and_the_log_says_it_would_deny(
    lab: Lab,
) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h1", "b", "web", "10.1.0.6")
    rule = ssh_rule()
    lab.index.put_rule(rule)
    syn = lab.tcp_packet(a, "10.1.0.6", 22)
    assert deliver(lab, "h1", syn) == f"output:{lab.port_of(b)}"  # it passes
    assert stateful(lab, "h1")  # flows installed (per port: the rule tells ports apart)
    assert deliver(lab, "h1", lab.reply(syn, b)) == f"output:{lab.port_of(a)}"
    (e,) = events(lab, "allowed")
    assert (e.verdict, e.kind, e.rule_id, e.dport) == ("allow", "network", None, 22)
    assert e.audit == (AuditNote("firewall", rule.id, "deny",
                                 f"firewall rule {rule.id[:8]} #0 on network web"),)
    assert events(lab, "denied") == []
    # a port the rule does not match: no note
    deliver(lab, "h1", lab.tcp_packet(a, "10.1.0.6", 80))
    assert [(x.dport, x.audit) for x in events(lab, "allowed")][1:] == [(80, ())]


def test_enforcing_it_revokes_the_live_connection_and_denies_the_next(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h2", "b", "web", "10.1.0.6")
    rule = ssh_rule()
    lab.index.put_rule(rule)
    syn = lab.tcp_packet(a, "10.1.0.6", 22)
    assert deliver(lab, "h1", syn).startswith("output")
    assert stateful(lab, "h1") and lab.agents["h1"].via() == {"10.1.0.6": "198.18.0.12"}
    lab.advance(3.0)
    enforce(lab, rule)
    (r,) = events(lab, "revoked")
    assert (r.dport, r.verdict, r.ended_by) == (
        22, "allow", f"policy change: now denied by firewall rule {rule.id[:8]} #0 on network web")
    assert r.duration == pytest.approx(3.0)
    assert stateful(lab, "h1") == [] and lab.agents["h1"].via() == {}  # its flows and route
    # the live connection's next packet is decided again: denied, by the rule
    assert deliver(lab, "h1", syn) == "drop"
    assert deliver(lab, "h1", lab.tcp_packet(a, "10.1.0.6", 22, sport=40001)) == "drop"
    denied = events(lab, "denied")
    assert denied and all((d.kind, d.rule_id, d.audit) == ("firewall", rule.id, ())
                          for d in denied)
    assert lab.send("h2", lab.reply(syn, b)).kind != "output"  # nothing left on h2 either


def test_an_enforced_rule_above_shadows_the_audited_one(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    lab.index.put_rule(ssh_rule("allow", audit=False, position=0))
    lab.index.put_rule(ssh_rule("deny", audit=True, position=1))
    deliver(lab, "h1", lab.tcp_packet(a, "10.1.0.6", 22))
    (e,) = events(lab, "allowed")
    assert (e.kind, e.rule_id, e.audit) == ("firewall", "r-ssh-allow-0", ())


def test_an_audited_allow_over_the_default_deny(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "c", "db", "172.31.7.9")
    rule = FirewallRule(id="r-web-to-db", target_kind="network", target="db", position=0,
                        action="allow", source=RuleSource(kind="network", value="web"),
                        audit=True)
    lab.index.put_rule(rule)
    pkt = lab.tcp_packet(a, "172.31.7.9", 5432)
    assert deliver(lab, "h1", pkt) == "drop"  # still denied
    (e,) = events(lab, "denied")
    assert (e.verdict, e.kind) == ("deny", "default")
    assert [(n.id, n.would) for n in e.audit] == [("r-web-to-db", "allow")]
    enforce(lab, rule)
    assert deliver(lab, "h1", pkt).startswith("output")  # the cached denial went too
    assert events(lab, "allowed")[-1].rule_id == "r-web-to-db"


def test_an_audited_pair_policy_then_enforced(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    b = lab.container("h1", "b", "web", "10.1.0.6")
    policy = PairPolicy(a="a", b="b", action="deny", audit=True)
    lab.index.put_pair_policy(policy)
    ping = lab.ip_packet(a, "10.1.0.6")
    assert deliver(lab, "h1", ping) == f"output:{lab.port_of(b)}"
    assert len(open_flows(lab, "h1")) == 2  # still the cheap pair flows
    (e,) = events(lab, "allowed")
    assert (e.kind, [(n.kind, n.id, n.would) for n in e.audit]) == (
        "network", [("pair", "a|b", "deny")])
    lab.index.put_pair_policy(policy.model_copy(update={"audit": False}))
    lab.policy_changed()
    (r,) = events(lab, "revoked")
    assert r.ended_by == "policy change: now denied by pair policy a<->b (disconnect)"
    assert open_flows(lab, "h1") == []
    assert deliver(lab, "h1", ping) == "drop"
    assert events(lab, "denied")[-1].kind == "pair"


def test_putting_a_rule_in_audit_mode_lets_its_connections_through(lab: Lab) -> None:
    a = lab.container("h1", "a", "web", "10.1.0.5")
    lab.container("h1", "b", "web", "10.1.0.6")
    rule = ssh_rule(audit=False)
    lab.index.put_rule(rule)
    syn = lab.tcp_packet(a, "10.1.0.6", 22)
    assert deliver(lab, "h1", syn) == "drop"
    lab.index.put_rule(rule.model_copy(update={"audit": True}))
    lab.policy_changed()
    assert deliver(lab, "h1", syn).startswith("output")
    assert events(lab, "allowed")[-1].audit[0].would == "deny"
