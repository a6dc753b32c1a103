"""`daolictl connections` against a real API server on 127.0.0.1 serving a
connection log (controller/daolictl/command_groups/connections.py)."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.api.deps import ApiContext
from controller.api.routes import live
from controller.connlog.log import ConnectionLog
from controller.daolictl.commands import app as cli_app
from controller.datapath.connections import ConnEvent
from controller.desired.inventory import Inventory
from controller.desired.policy import AuditNote
from controller.store.sqlite import SqliteStore
from tests.unit.apiserver import serve
from tests.unit.clirunner import CliRunner
from tests.unit.daolictl.support import FakeRuntime

TOKEN, READONLY = "cli-token", "cli-readonly"
IP = ipaddress.IPv4Address


def ev(event: str, dport: int, rule: str | None = None, **kw: Any) -> ConnEvent:
    denied = event == "denied"
    base = ConnEvent(
        event, IP("10.1.0.5"), IP("10.1.0.6"), 6, 40000, dport,  # type: ignore[arg-type]
        ("web1", "web", "h1", "default"), ("db1", "db", "h2", "east"),
        "deny" if denied else "allow", "firewall rule" if rule else "same network web",
        "firewall" if rule else "network", rule, None if denied else "wireguard", "h1",
    )
    return replace(base, **kw)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ConnectionLog]]:
    ticks = iter(1_800_000_000.0 + i for i in range(10**6))  # a second per read
    connlog = ConnectionLog(clock=lambda: next(ticks))
    connlog.record([ev("allowed", 5432),
                    ev("denied", 22, rule="0123456789ab", count=40),
                    ev("expired", 5432, duration=12.5, packets=30, bytes=4096)])
    store = SqliteStore(tmp_path / "db")
    ctx = ApiContext(inventory=Inventory(store, lambda _c: None), token=TOKEN,
                     readonly_token=READONLY, runtime=FakeRuntime(), openflow_host="0.0.0.0",
                     openflow_port=6653, connlog=connlog, replica={"name": "c0"})
    with serve(ctx, [live.router]) as url:
        yield url, connlog
    store.close()


def run(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args),
                              env={"DAOLINET_URL": url, "DAOLINET_TOKEN": READONLY})


def test_the_log_as_a_table(served: tuple[str, ConnectionLog]) -> None:
    url, _ = served
    r = run(url, "connections")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["TIME", "EVENT", "SRC", "DST"]
    assert lines[1].split()[1:7] == ["allowed", "web1", "(10.1.0.5:40000)", "db1",
                                     "(10.1.0.6:5432)", "tcp"]
    assert lines[1].startswith("2027-01-15T08:00:00")
    assert "firewall 01234567" in lines[2] and " 40 " in lines[2]
    assert lines[3].split()[-5:] == ["1", "30", "4096", "12.5s", "-"]  # no note


def test_filters_and_json(served: tuple[str, ConnectionLog]) -> None:
    url, _ = served
    r = run(url, "connections", "--verdict", "deny", "--json")
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.stdout)
    assert (entry["event"], entry["count"], entry["rule_id"]) == ("denied", 40, "0123456789ab")
    assert entry["dst"]["site"] == "east"
    r = run(url, "connections", "--kind", "firewall", "--host", "h2", "--json")
    assert [e["event"] for e in json.loads(r.stdout)] == ["denied"]
    r = run(url, "connections", "--container", "nobody")
    assert r.stdout.strip() == "no entries"


def test_a_refusal_names_the_field(served: tuple[str, ConnectionLog]) -> None:
    url, _ = served
    r = run(url, "connections", "--limit", "5000")
    assert r.exit_code == 1 and "query parameter limit" in r.stderr


def test_follow_prints_what_comes_after_as_json_lines(served: tuple[str, ConnectionLog]) -> None:
    url, connlog = served
    later = threading.Timer(0.3, lambda: connlog.record([ev("revoked", 8080)]))
    later.start()
    try:
        r = run(url, "connections", "--follow", "--json", "--every", "0.2", "--polls", "5")
    finally:
        later.cancel()
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["event"] for x in rows] == ["allowed", "denied", "expired", "revoked"]


def test_audit_notes_and_what_ended_a_connection_are_shown(
    served: tuple[str, ConnectionLog],
) -> None:
    url, connlog = served
    would = AuditNote("firewall", "fedcba9876543210", "deny", "firewall rule fedcba98 #0")
    connlog.record([ev("allowed", 8080, audit=(would,)),
                    ev("revoked", 8080, ended_by="container db1 removed")])
    r = run(url, "connections", "--rule", "fedcba98")
    assert r.exit_code == 0, r.output
    (row,) = r.stdout.splitlines()[1:]  # found by the audited rule's id
    assert "audit: firewall fedcba98 would deny" in row and ":8080)" in row
    r = run(url, "connections", "--event", "revoked", "--json")
    (entry,) = json.loads(r.stdout)
    assert entry["ended_by"] == "container db1 removed" and entry["audit"] == []
    assert "container db1 removed" in run(url, "connections", "--event", "revoked").stdout
