"""The connection log against real packets (docs/architecture.md, "Connection log").

Two hosts, one module-scoped testbed (idle timeout 2 s, the log also written as
JSON lines to a file):

    h1: a1 web 10.1.0.11   d1 db 172.31.7.11
    h2: a2 web 10.1.0.21   a3 web 10.1.0.22   d2 db 172.31.7.21

Each test uses pairs of its own, so the entries it looks for are its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_testbed
from testbed import Container, Testbed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

IDLE = 2
WEB, DB = "web", "db"
LAYOUT = {
    "a1": ("h1", WEB, "10.1.0.11"),
    "d1": ("h1", DB, "172.31.7.11"),
    "a2": ("h2", WEB, "10.1.0.21"),
    "a3": ("h2", WEB, "10.1.0.22"),
    "d2": ("h2", DB, "172.31.7.21"),
}


class Lab:
    def __init__(self, tb: Testbed, c: dict[str, Container], jsonl: Path) -> None:
        self.tb, self.c, self.jsonl = tb, c, jsonl


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    jsonl = tmp_path_factory.mktemp("connlog") / "connections.jsonl"
    args = ["--connection-log-file", str(jsonl), "--connection-log-interval", "10"]
    with make_testbed(hosts=2, idle_timeout=IDLE, controller_args=args) as tb:
        tb.create_network(WEB, "10.1.0.0/24")
        tb.create_network(DB, "172.31.7.0/24")
        c = {n: tb.container(h, n, net, ip=ip) for n, (h, net, ip) in LAYOUT.items()}
        yield Lab(tb, c, jsonl)


def entries(tb: Testbed, **params: Any) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    rows: list[dict[str, Any]] = tb.api_json("GET", f"/connections?{query}")["entries"]
    return rows


def between(rows: list[dict[str, Any]], src: str, dst: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["src"]["container"] == src and r["dst"]["container"] == dst]


def test_an_allowed_tcp_connection_is_logged_and_expires_with_its_bytes(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    assert tb.tcp_ok(c["a1"], c["a2"], port=5001), tb.state_dump()
    rows = between(entries(tb, event="allowed", container="a1"), "a1", "a2")
    assert len(rows) == 1, rows
    allowed = rows[0]
    assert (allowed["verdict"], allowed["kind"], allowed["reason"]) == (
        "allow", "network", "same network web")
    assert (allowed["proto"], allowed["dst"]["port"], allowed["path"]) == ("tcp", 5001, "underlay")
    assert (allowed["src"]["host"], allowed["dst"]["host"]) == ("h1", "h2")
    assert allowed["src"]["site"] == allowed["dst"]["site"] == "default"

    def expired() -> list[dict[str, Any]]:
        return between(entries(tb, event="expired", container="a2"), "a1", "a2")

    (gone,) = tb.wait_until(expired, 15, "no expiry entry for a1 -> a2", interval=0.5,
                            detail=tb.state_dump)
    assert (gone["dst"]["port"], gone["path"], gone["kind"]) == (5001, "underlay", "network")
    # SYN, SYN/ACK, data, FINs and ACKs: each packet counted once, both directions
    assert gone["packets"] >= 6 and gone["bytes"] >= gone["packets"] * 54, gone
    assert gone["duration"] >= IDLE


def test_a_denied_connection_names_what_denied_it(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    assert not tb.tcp_ok(c["a1"], c["d1"], port=5432, timeout=2)
    rows = between(entries(tb, verdict="deny", container="d1"), "a1", "d1")
    assert rows, tb.state_dump()
    first = rows[0]
    assert (first["event"], first["kind"], first["reason"]) == ("denied", "default",
                                                                 "default deny")
    assert (first["proto"], first["dst"]["port"], first["path"]) == ("tcp", 5432, None)
    assert len(rows) == 1  # the SYN's retries are the same entry
    trace = tb.api_json("GET", "/trace?src=a1&dst=d1&proto=tcp&port=5432")
    assert trace["reason"] == first["reason"]


def test_a_denied_flood_is_one_entry_with_its_count(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    assert not tb.ping(c["a1"], c["d2"], count=150, interval=0.01, timeout=1)

    def counted() -> list[dict[str, Any]]:
        rows = between(entries(tb, verdict="deny", container="d2"), "a1", "d2")
        return rows if rows and rows[0]["count"] >= 100 else []

    # the drop flow's packets join the entry when it idles out (--deny-hold 3 s)
    rows = tb.wait_until(counted, 15, "the flood's count did not arrive", interval=0.5,
                         detail=lambda: str(entries(tb, container="d2")))
    assert len(rows) == 1 and rows[0]["count"] <= 150, rows
    assert rows[0]["proto"] == "icmp" and rows[0]["last"] > rows[0]["time"]


def test_a_revocation_is_logged_and_the_file_has_every_entry(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    proc = tb.spawn(c["a1"], "ping", "-n", "-i", "0.1", c["a3"].ip, what="background ping",
                    log=tb.dir / "ping-connlog.log")
    try:
        tb.wait_until(lambda: between(entries(tb, event="allowed", container="a3"), "a1", "a3"),
                      5, "no allowed entry for a1 -> a3")
        tb.api_json("PUT", "/policies/a1/a3", {"action": "deny"})
        (revoked,) = tb.wait_until(
            lambda: between(entries(tb, event="revoked", container="a3"), "a1", "a3"), 5,
            "no revoked entry for a1 -> a3")
        assert revoked["packets"] >= 0 and revoked["kind"] == "network"
        denied = tb.wait_until(
            lambda: between(entries(tb, verdict="deny", container="a3"), "a1", "a3"), 5,
            "no denied entry after the revocation")
        assert denied[0]["kind"] == "pair" and "disconnect" in denied[0]["reason"]
    finally:
        tb.stop(proc)
        tb.api("DELETE", "/policies/a1/a3")

    # the file (written once a second) has the allowed and revoked entries
    def lines() -> list[dict[str, Any]]:
        text = lab.jsonl.read_text() if lab.jsonl.exists() else ""
        return [json.loads(x) for x in text.splitlines()]

    tb.wait_until(lambda: between([r for r in lines() if r["event"] == "revoked"], "a1", "a3"),
                  5, f"no revoked line in {lab.jsonl}")
    assert all({"time", "event", "verdict", "src", "dst"} <= set(r) for r in lines())
    assert between([r for r in lines() if r["event"] == "allowed"], "a1", "a3")


def test_an_audited_rule_would_deny_while_traffic_flows_then_enforced(lab: Lab) -> None:
    """Audit mode (docs/architecture.md, "Audit mode"): an audited deny of ICMP on db
    lets d1's pings to d2 through and logs "would deny"; enforcing it revokes the
    live connection (logged) and the pings stop; TCP, which it does not match, passes."""
    tb, c = lab.tb, lab.c
    rule = tb.api_json("POST", "/firewalls/rules", {
        "target_kind": "network", "target": DB, "action": "deny", "protocol": "icmp",
        "source": {"kind": "network", "value": DB}, "audit": True,
    })  # fmt: skip
    proc = tb.spawn(c["d1"], "ping", "-n", "-i", "0.1", c["d2"].ip, what="background ping",
                    log=tb.dir / "ping-audit.log")
    try:
        assert tb.ping(c["d1"], c["d2"], count=3, all_replies=True), tb.state_dump()
        (allowed,) = between(entries(tb, event="allowed", rule=rule["id"]), "d1", "d2")
        assert (allowed["verdict"], allowed["kind"], allowed["proto"]) == (
            "allow", "network", "icmp")
        assert allowed["audit"] == [{"kind": "firewall", "id": rule["id"], "would": "deny",
                                     "reason": f"firewall rule {rule['id'][:8]} #0 on network db"}]
        enforced = tb.api_json("PATCH", f"/firewalls/rules/{rule['id']}", {"audit": False})
        assert enforced["audit"] is False
        (revoked,) = tb.wait_until(
            lambda: between(entries(tb, event="revoked", container="d2"), "d1", "d2"), 5,
            "no revoked entry for d1 -> d2")
        assert revoked["ended_by"] == (
            f"policy change: now denied by firewall rule {rule['id'][:8]} #0 on network db")
        # its packets are those the flows had at their last dump (often none yet)
        assert revoked["packets"] >= 0 and revoked["duration"] > 0, revoked
        assert not tb.ping(c["d1"], c["d2"], count=3, timeout=2), "the enforced rule let ICMP by"
        denied = between(entries(tb, event="denied", rule=rule["id"]), "d1", "d2")
        assert denied and denied[0]["kind"] == "firewall" and denied[0]["audit"] == [], denied
        assert tb.tcp_ok(c["d1"], c["d2"], port=5003)  # not what the rule matches
    finally:
        tb.stop(proc)
        tb.api("DELETE", f"/firewalls/rules/{rule['id']}")


def test_a_detached_container_s_connections_are_logged_as_revoked(lab: Lab) -> None:
    tb, c = lab.tb, lab.c
    gone = tb.container("h2", "r1", WEB, ip="10.1.0.23")
    # pings keep the connection live (idle timeout 2 s) until the detach ends it
    proc = tb.spawn(c["a1"], "ping", "-n", "-i", "0.2", gone.ip, what="background ping",
                    log=tb.dir / "ping-detach.log")
    try:
        tb.wait_until(lambda: between(entries(tb, event="allowed", container="r1"), "a1", "r1"),
                      5, "no allowed entry for a1 -> r1", detail=tb.state_dump)
        res = tb.detach(gone)
        assert res.returncode == 0, res.stderr
        (revoked,) = tb.wait_until(
            lambda: between(entries(tb, event="revoked", container="r1"), "a1", "r1"), 5,
            "no revoked entry for a1 -> r1", detail=lambda: str(entries(tb, container="r1")))
    finally:
        tb.stop(proc)
    # the agent deletes the port, then the endpoint: whichever the controller hears first
    assert revoked["ended_by"] == "container r1 removed" or revoked["ended_by"].startswith(
        "container r1 detached (port "), revoked
    assert revoked["duration"] > 0 and not between(
        entries(tb, event="expired", container="r1"), "a1", "r1"), revoked


def test_a_connection_adopted_after_a_controller_restart_expires_with_its_counts(
    lab: Lab,
) -> None:
    """Last in this module: the restart empties the (in-memory) log."""
    tb, c = lab.tb, lab.c
    proc = tb.spawn(c["a2"], "ping", "-n", "-i", "0.2", c["a3"].ip, what="background ping",
                    log=tb.dir / "ping-adopted.log")
    try:
        tb.wait_until(lambda: between(entries(tb, event="allowed", container="a3"), "a2", "a3"),
                      5, "no allowed entry for a2 -> a3")
        tb.restart_controller()
        assert tb.ping(c["a2"], c["a3"], count=2, all_replies=True), tb.state_dump()
    finally:
        tb.stop(proc)
    (gone,) = tb.wait_until(
        lambda: between(entries(tb, event="expired", container="a3"), "a2", "a3"), 20,
        "no expiry entry for the adopted a2 -> a3", interval=0.5, detail=tb.state_dump)
    assert gone["reason"] == "same network web (adopted from the switch's flows)", gone
    assert (gone["path"], gone["observer"], gone["verdict"]) == ("local", "h2", "allow")
    # what the switch counted since the flows were installed, before the restart too
    assert gone["packets"] >= 4 and gone["bytes"] >= gone["packets"] * 84, gone
    assert gone["duration"] >= IDLE
