"""daolictl policy commands against a real uvicorn server (groups, policies, firewalls,
trace, network --external, roles)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cliutil import CliError
from controller.daolictl.args import parse_port, parse_publish, parse_source
from controller.daolictl.command_groups.trace import path_text
from controller.daolictl.commands import app as cli_app
from tests.unit.clirunner import CliRunner
from tests.unit.daolictl.support import Api, served_api

TOKEN, READONLY = "cli-admin", "cli-readonly"


@pytest.fixture(scope="module")
def api(tmp_dir: Callable[[str], Path]) -> Iterator[Api]:
    with served_api(tmp_dir("clipol") / "cli.db", TOKEN, readonly_token=READONLY) as served:
        yield served


@pytest.fixture
def run(api: Api):
    runner = CliRunner()

    def invoke(*args: str, token: str = TOKEN) -> Any:
        env = {"DAOLINET_URL": api.url, "DAOLINET_TOKEN": token}
        return runner.invoke(cli_app, list(args), env=env)

    return invoke


@pytest.fixture(autouse=True)
def lab(api: Api) -> Iterator[None]:
    inv = api.ctx.inventory
    inv.register_host("h1", "198.18.0.11")
    inv.register_host("h2", "198.18.0.12")
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("api", "10.2.0.0/24")
    inv.add_endpoint("w1", "web", "h1")  # 10.1.0.2
    inv.add_endpoint("w2", "web", "h2")  # 10.1.0.3
    inv.add_endpoint("a1", "api", "h2")  # 10.2.0.2
    yield
    for port in inv.published_ports():
        inv.unpublish_port(port.id)
    for policy in inv.pair_policies():
        inv.clear_pair_policy(policy.a, policy.b)
    for group in inv.groups():
        inv.delete_group(group.name)
    for ep in inv.endpoints():
        inv.remove_endpoint(ep.id)
    for net in inv.networks():
        inv.delete_network(net.name)


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    out: str = result.stdout
    return out


def fails(result: Any, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert "Traceback" not in result.output


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


# --- groups -------------------------------------------------------------------------------


def test_group_commands(run) -> None:
    out = ok(run("group", "create", "front", "web"))
    assert ["networks", "web"] in rows(out)
    assert rows(ok(run("group", "add", "front", "api"))).count(["networks", "api,", "web"]) == 1
    out = ok(run("group", "list"))
    assert rows(out) == [["NAME", "NETWORKS"], ["front", "api,", "web"]]
    shown = json.loads(ok(run("group", "show", "front", "--json")))
    assert shown["networks"] == ["api", "web"]
    assert json.loads(ok(run("group", "list", "--json"))) == [shown]
    out = ok(run("group", "remove", "front", "web", "--json"))
    assert json.loads(out)["networks"] == ["api"]
    assert ok(run("group", "delete", "front")).strip() == "deleted group front"
    assert ok(run("group", "list")).strip() == "no groups"


def test_group_errors(run) -> None:
    fails(run("group", "create", "g", "nope"), "network nope not found (HTTP 404)")
    fails(run("group", "show", "nope"), "group nope not found (HTTP 404)")
    fails(run("group", "create", "bad name"), "name: String should match pattern")
    ok(run("group", "create", "g"))
    fails(run("group", "create", "g"), "group g already exists (HTTP 409)")
    fails(run("group", "remove", "g", "web"), "network web is not a member of group g")
    fails(run("group", "add", "g", "nope"), "network nope not found (HTTP 404)")
    fails(run("group", "delete", "nope"), "group nope not found (HTTP 404)")


# --- pair policies ------------------------------------------------------------------------


def test_connect_disconnect_show_clear(run, api: Api) -> None:
    a1_id = api.ctx.inventory.endpoint("a1").id
    assert ok(run("connect", "w1", a1_id)).strip() == "a1 <-> w1: connected (allow)"
    assert ok(run("policy", "show", "a1", "w1")).strip() == "a1 <-> w1: connected (allow)"
    assert ok(run("disconnect", "a1", "w1")).strip() == "a1 <-> w1: disconnected (deny)"
    shown = json.loads(ok(run("policy", "show", "w1", "a1", "--json")))
    assert (shown["a"], shown["b"], shown["action"]) == ("a1", "w1", "deny")
    out = ok(run("policy", "list"))
    assert rows(out)[0] == ["A", "B", "ACTION", "MODE", "CREATED"]
    assert rows(out)[1][:4] == ["a1", "w1", "deny", "enforced"]
    assert json.loads(ok(run("policy", "list", "--container", "w2", "--json"))) == []
    assert json.loads(ok(run("connect", "w1", "w2", "--json")))["action"] == "allow"
    assert ok(run("policy", "clear", "w1", "a1")).strip() == "cleared pair policy a1 <-> w1"
    assert json.loads(ok(run("policy", "clear", "w1", "w2", "--json")))["b"] == "w2"
    assert ok(run("policy", "list")).strip() == "no pair policies"


def test_policy_errors(run) -> None:
    fails(run("connect", "w1", "ghost"), "container ghost not found (HTTP 404)")
    fails(run("disconnect", "w1", "w1"), "b 'w1' is the same container as a")
    fails(run("policy", "show", "w1", "w2"), "no pair policy between w1 and w2 (HTTP 404)")
    fails(run("policy", "clear", "w1", "w2"), "no pair policy between w1 and w2 (HTTP 404)")


# --- firewall ------------------------------------------------------------------------------


def test_firewall_rules(run) -> None:
    rule = json.loads(ok(run(
        "firewall", "create", "--network", "web", "--deny", "--from", "network:api",
        "--proto", "tcp", "--port", "22", "--port", "8000-8100", "--json",
    )))  # fmt: skip
    assert (rule["action"], rule["source"], rule["ports"]) == (
        "deny", {"kind": "network", "value": "api"}, ["22", "8000-8100"]
    )
    out = ok(run("firewall", "create", "--network", "web", "--from", "192.0.2.0/24",
                 "--position", "0"))  # fmt: skip
    assert ["source", "192.0.2.0/24"] in rows(out)
    assert ["action", "allow"] in rows(out)
    ok(run("group", "create", "g", "api"))
    ok(run("firewall", "create", "--group", "g", "--from", "any", "--proto", "icmp"))
    table = rows(ok(run("firewall", "list")))
    assert table[0] == ["ID", "TARGET", "#", "ACTION", "FROM", "PROTO", "PORTS", "MODE"]
    assert [r[1:] for r in table[1:]] == [
        ["group:g", "0", "allow", "any", "icmp", "any", "enforced"],
        ["network:web", "0", "allow", "192.0.2.0/24", "any", "any", "enforced"],
        ["network:web", "1", "deny", "network:api", "tcp", "22,8000-8100", "enforced"],
    ]
    listed = json.loads(ok(run("firewall", "list", "--network", "web", "--json")))
    assert [r["position"] for r in listed["rules"]] == [0, 1]
    shown = rows(ok(run("firewall", "show", rule["id"])))
    assert ["position", "1"] in shown and ["ports", "22,8000-8100"] in shown
    out = ok(run("firewall", "delete", rule["id"]))
    assert out.strip() == f"deleted firewall rule {rule['id']}"
    fails(run("firewall", "show", rule["id"]),
          f"firewall rule or published port {rule['id']} not found (HTTP 404)")


def test_published_ports(run) -> None:
    port = json.loads(ok(run("firewall", "create", "--container", "w1", "--publish", "8080:80",
                             "--json")))  # fmt: skip
    assert (port["host_port"], port["container_port"], port["protocol"], port["host"]) == (
        8080, 80, "tcp", "h1"
    )
    ok(run("firewall", "create", "-c", "w2", "--publish", "53/udp"))
    out = ok(run("firewall", "list", "--container", "w2"))
    assert rows(out)[0] == ["ID", "CONTAINER", "HOST", "HOST", "PORT", "CONTAINER", "PORT",
                            "PROTO"]  # fmt: skip
    assert rows(out)[1][1:] == ["w2", "h2", "53", "53", "udp"]
    out = ok(run("firewall", "list"))
    assert "w1" in out and "w2" in out and "TARGET" not in out  # no rules: no rule table
    assert ["container", "w1"] in rows(ok(run("firewall", "show", port["id"])))
    fails(run("firewall", "create", "-c", "w1", "--publish", "8080:81"),
          "host_port 8080/tcp on host h1 is already published for container w1 (HTTP 409)")
    out = ok(run("firewall", "delete", port["id"]))
    assert out.strip() == f"deleted published port {port['id']}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "web", "--group", "g"], "give exactly one of --network or --group"),
        ([], "give exactly one of --network or --group"),
        (["--network", "web", "--from", "web"], "--from 'web': use any, container:NAME"),
        (["--network", "nope"], "network nope not found (HTTP 404)"),
        (["--network", "web", "--port", "80"], "ports need protocol tcp or udp (protocol is any)"),
        (["--network", "web", "--proto", "tcp", "--port", "x"], "ports entry 'x' is not a port"),
        (["--network", "web", "--proto", "gre"], "protocol: Input should be"),
        (["--network", "web", "--from", "10.0.0.1/8"],
         "source.value 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"),
        (["--network", "web", "--from", "container:ghost"], "container ghost not found"),
        (["--container", "w1"], "publishing a port needs both --container and --publish"),
        (["--publish", "80"], "publishing a port needs both --container and --publish"),
        (["-c", "w1", "--publish", "80", "--network", "web"],
         "--publish does not go with --network, --group or --audit"),
        (["-c", "w1", "--publish", "80", "--audit"],
         "--publish does not go with --network, --group or --audit"),
        (["-c", "w1", "--publish", "http"], "--publish 'http': expected HOST_PORT"),
        (["-c", "w1", "--publish", "80/sctp"], "protocol: Input should be 'tcp' or 'udp'"),
        (["-c", "w1", "--publish", "0:80"], "host_port: Input should be greater than or equal"),
        (["-c", "ghost", "--publish", "80"], "container ghost not found (HTTP 404)"),
    ],
)
def test_firewall_create_errors(run, args, message) -> None:
    fails(run("firewall", "create", *args), message)


def test_a_rule_in_audit_mode_then_enforced(run) -> None:
    rule = json.loads(ok(run("firewall", "create", "--network", "web", "--deny", "--proto",
                             "tcp", "--port", "22", "--audit", "--json")))  # fmt: skip
    assert rule["audit"] is True
    assert rows(ok(run("firewall", "list")))[1][-1] == "audit"
    assert ["mode", "audit"] in rows(ok(run("firewall", "show", rule["id"])))
    # trace answers as the policy decides now: the audited rule does not deny
    t = json.loads(ok(run("trace", "w1", "w2", "--port", "22/tcp", "--json")))
    assert (t["verdict"], t["audit"]) == ("allow", [
        {"kind": "firewall", "id": rule["id"], "would": "deny",
         "reason": f"firewall rule {rule['id'][:8]} #0 on network web"}])
    shown = rows(ok(run("trace", "w1", "w2", "--port", "22/tcp")))
    assert ["audit", "firewall", "rule", rule["id"][:8], "#0", "on", "network", "web",
            "would", "deny"] in shown
    out = ok(run("firewall", "enforce", rule["id"]))
    assert out.strip() == f"firewall rule {rule['id']}: enforced"
    t = json.loads(ok(run("trace", "w1", "w2", "--port", "22/tcp", "--json")))
    assert (t["verdict"], t["rule_id"], t["audit"]) == ("deny", rule["id"], [])
    assert json.loads(ok(run("firewall", "audit", rule["id"], "--json")))["audit"] is True
    fails(run("firewall", "enforce", "nope"), "firewall rule nope not found (HTTP 404)")


def test_a_pair_policy_in_audit_mode_then_enforced(run) -> None:
    out = ok(run("disconnect", "w1", "w2", "--audit"))
    assert out.strip() == "w1 <-> w2: disconnected (deny), audit mode"
    assert rows(ok(run("policy", "list")))[1][:4] == ["w1", "w2", "deny", "audit"]
    t = json.loads(ok(run("trace", "w1", "w2", "--json")))
    assert (t["verdict"], [a["would"] for a in t["audit"]]) == ("allow", ["deny"])
    assert ok(run("policy", "enforce", "w2", "w1")).strip() == "w1 <-> w2: disconnected (deny)"
    assert json.loads(ok(run("trace", "w1", "w2", "--json")))["verdict"] == "deny"
    fails(run("policy", "enforce", "w1", "a1"), "no pair policy between w1 and a1 (HTTP 404)")


def test_firewall_not_found(run) -> None:
    fails(run("firewall", "delete", "x"), "firewall rule or published port x not found")


# --- trace ---------------------------------------------------------------------------------


def test_trace(run) -> None:
    out = ok(run("trace", "w1", "w2", "--port", "80/tcp"))
    assert rows(out) == [
        ["verdict", "allow"],
        ["reason", "same", "network", "web"],
        ["rule", "-"],
        ["from", "w1", "10.1.0.2", "(network", "web,", "host", "h1)"],
        ["to", "w2", "10.1.0.3", "(network", "web,", "host", "h2)"],
        ["service", "80/tcp"],
        ["path", "198.18.0.11", "->", "198.18.0.12", "->", "10.1.0.3"],
    ]
    denied = json.loads(ok(run("trace", "w1", "a1", "--json")))
    assert (denied["verdict"], denied["path"], denied["proto"]) == ("deny", [], "tcp")
    rule = json.loads(ok(run("firewall", "create", "--network", "api", "--from", "network:web",
                             "--proto", "udp", "--port", "53", "--json")))  # fmt: skip
    t = json.loads(ok(run("trace", "w1", "a1", "--port", "53/udp", "--json")))
    assert (t["verdict"], t["rule_id"], t["port"]) == ("allow", rule["id"], 53)
    assert ["service", "icmp"] in rows(ok(run("trace", "w1", "a1", "--port", "icmp")))
    out = ok(run("trace", "192.0.2.1", "w1"))
    assert ["from", "192.0.2.1", "(outside", "daolinet)"] in rows(out)
    assert ["verdict", "deny"] in rows(out)


def test_trace_path_marks_tunnel_and_relay_addresses() -> None:
    hops = [
        {"address": "198.19.0.4", "host": "h4", "kind": "tunnel"},
        {"address": "198.19.0.3", "host": "h3", "kind": "relay"},
        {"address": "198.19.0.5", "host": "h5", "kind": "tunnel"},
        {"address": "10.1.0.7", "host": None, "kind": "container"},
    ]
    assert path_text({"path": [h["address"] for h in hops], "hops": hops}) == [
        "198.19.0.4 (wireguard h4)", "198.19.0.3 (relay h3)", "198.19.0.5 (wireguard h5)",
        "10.1.0.7",
    ]
    assert path_text({"path": ["10.1.0.4"]}) == ["10.1.0.4"]  # a server without hops


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost", "w1"], "src: container ghost not found (HTTP 404)"),
        (["w1", "ghost"], "dst: container ghost not found (HTTP 404)"),
        (["w1", "w2", "--port", "http"], "--port 'http': expected PORT[/tcp|udp] or icmp"),
        (["w1", "w2", "--port", "80/sctp"], "query parameter proto: Input should be"),
        (["w1", "w2", "--port", "0"], "query parameter port: Input should be greater"),
    ],
)
def test_trace_errors(run, args, message) -> None:
    fails(run("trace", *args), message)


# --- networks and roles -------------------------------------------------------------------


def test_network_external(run) -> None:
    created = json.loads(ok(run("network", "create", "out", "10.9.0.0/24", "--external",
                                "--json")))  # fmt: skip
    assert created["external"] is True
    assert ["external", "True"] in rows(ok(run("network", "show", "out")))
    assert ["out", "10.9.0.0/24", "10.9.0.1", "1500", "yes"] in [
        r[:5] for r in rows(ok(run("network", "list")))
    ]
    out = ok(run("network", "set", "out", "--no-external"))
    assert ["external", "False"] in rows(out)
    assert json.loads(ok(run("network", "set", "web", "--external", "--json")))["external"]
    fails(run("network", "set", "nope", "--external"), "network nope not found (HTTP 404)")


def test_readonly_token_reads_but_may_not_change(run) -> None:
    ok(run("group", "list", token=READONLY))
    ok(run("trace", "w1", "w2", token=READONLY))
    fails(run("connect", "w1", "w2", token=READONLY),
          "the read-only token may not change anything (PUT /api/v1/policies/w1/w2) (HTTP 403)")


# --- argument parsing ----------------------------------------------------------------------


def test_parsers() -> None:
    assert parse_source("any") == {"kind": "any"}
    assert parse_source("10.0.0.0/8") == {"kind": "cidr", "value": "10.0.0.0/8"}
    assert parse_source("192.0.2.1") == {"kind": "cidr", "value": "192.0.2.1"}
    assert parse_source("group:g") == {"kind": "group", "value": "g"}
    assert parse_source("cidr:10.0.0.0/8") == {"kind": "cidr", "value": "10.0.0.0/8"}
    for bad in ("web", "host:h1", "container:"):
        with pytest.raises(CliError):
            parse_source(bad)
    assert parse_publish("8080:80/udp") == {"host_port": 8080, "container_port": 80,
                                            "protocol": "udp"}  # fmt: skip
    assert parse_publish("443") == {"host_port": 443, "container_port": 443, "protocol": "tcp"}
    assert parse_port("80") == ("tcp", 80)
    assert parse_port("53/UDP") == ("udp", 53)
    assert parse_port("icmp") == ("icmp", None)
    assert parse_port("udp") == ("udp", None)
    # ASCII digits only: int() would take these as 8080 and 80
    for bad in ("8_080", "+8080", "\u0668\u0660\u0668\u0660", "8080:+80", "80:8_0/udp"):
        with pytest.raises(CliError, match="--publish"):
            parse_publish(bad)
    for bad in ("8_0", "+80", "\u0668\u0660/tcp"):
        with pytest.raises(CliError, match="--port"):
            parse_port(bad)


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, sub in getattr(group, "commands", {}).items():
        found += _commands(sub, (*prefix, name))
    return found


def test_every_help_renders() -> None:
    """Help text is rich markup: a stray `[/...]` would make --help fail."""
    import typer

    runner = CliRunner()
    commands = _commands(typer.main.get_command(cli_app))
    assert ("firewall", "create") in commands and ("trace",) in commands
    for command in commands:
        r = runner.invoke(cli_app, [*command, "--help"], env={"COLUMNS": "120"})
        assert r.exit_code == 0, (command, r.output)
        assert "Usage" in r.output
