"""`daolictl firewall ...`: firewall rules on networks and groups, and published ports."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.cliutil import CliError
from controller.daolictl import render
from controller.daolictl.args import AuditOpt, JsonOpt, parse_publish, parse_source, segment
from controller.daolictl.client import call, client_of, fail

app = typer.Typer(
    help="Firewall rules on networks and groups, and published ports.", no_args_is_help=True
)


def _source_text(value: Any) -> str:
    if not isinstance(value, dict):
        return render.text(value)
    if value.get("kind") == "any":
        return "any"
    if value.get("kind") == "cidr":
        return str(value.get("value"))
    return f"{value.get('kind')}:{value.get('value')}"


def _ports_text(value: Any) -> str:
    return ",".join(str(v) for v in value) if value else "any"


RULE_COLUMNS: list[render.Column] = [
    ("id", "ID", render.short),
    ("target", "TARGET", render.text),
    ("position", "#", render.text),
    ("action", "ACTION", render.text),
    ("source", "FROM", _source_text),
    ("protocol", "PROTO", render.text),
    ("ports", "PORTS", _ports_text),
    ("audit", "MODE", lambda audit: render.mode(audit)),
]
PORT_COLUMNS: list[render.Column] = [
    ("id", "ID", render.short),
    ("container", "CONTAINER", render.text),
    ("host", "HOST", render.text),
    ("host_port", "HOST PORT", render.text),
    ("container_port", "CONTAINER PORT", render.text),
    ("protocol", "PROTO", render.text),
]


def _rule_row(rule: dict[str, Any]) -> dict[str, Any]:
    return {**rule, "target": f"{rule.get('target_kind')}:{rule.get('target')}"}


def _firewall_item(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.print_json(item)
    elif item.get("type") == "port":
        render.record(item, ["id", "container", "host", "host_port", "container_port",
                             "protocol", "created_at"])  # fmt: skip
    else:
        row = {**_rule_row(item), "source": _source_text(item.get("source")),
               "ports": _ports_text(item.get("ports")),
               "mode": render.mode(item.get("audit"))}  # fmt: skip
        render.record(row, ["id", "target", "position", "action", "source", "protocol",
                            "ports", "mode", "created_at"])  # fmt: skip


@app.command("list")
def firewall_list(
    ctx: typer.Context,
    network: Annotated[str | None, typer.Option("--network", "-n", help="Rules on it.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Rules on it.")] = None,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Its published ports.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List firewall rules (in evaluation order) and published ports."""
    params = {k: v for k, v in (("network", network), ("group", group),
                                ("container", container)) if v}  # fmt: skip
    found = call(ctx, "GET", "/firewalls", params=params or None)
    if as_json:
        render.print_json(found)
        return
    rules = [_rule_row(r) for r in found.get("rules", [])]
    ports = found.get("ports", [])
    if rules or not ports:
        render.table(rules, RULE_COLUMNS, "no firewall rules")
    if ports:
        if rules:
            render.say("")
        render.table(ports, PORT_COLUMNS, "no published ports")


@app.command("show")
def firewall_show(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(metavar="ID", help="Rule or published port id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a firewall rule or a published port."""
    _firewall_item(call(ctx, "GET", f"/firewalls/{segment(item_id)}"), as_json)


@app.command("create")
def firewall_create(
    ctx: typer.Context,
    network: Annotated[
        str | None, typer.Option("--network", "-n", help="Rule on this network.")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Rule on this group.")] = None,
    allow: Annotated[bool, typer.Option("--allow/--deny", help="Rule action.")] = True,
    source: Annotated[
        str,
        typer.Option(
            "--from", help="any, container:NAME, network:NAME, group:NAME or a CIDR."
        ),
    ] = "any",
    proto: Annotated[str, typer.Option("--proto", "-p", help="tcp, udp, icmp or any.")] = "any",
    ports: Annotated[
        list[str] | None,
        typer.Option("--port", help="Destination port or range (repeatable), e.g. 8000-8100."),
    ] = None,
    position: Annotated[
        int | None, typer.Option("--position", help="Insert at (0 = first); default last.")
    ] = None,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Container to publish a port of.")
    ] = None,
    publish: Annotated[
        str | None,
        typer.Option(
            "--publish", help=r"HOST_PORT\[:CONTAINER_PORT]\[/tcp|udp] (with --container)."
        ),
    ] = None,
    audit: AuditOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a firewall rule (--network or --group) or publish a port (--container --publish)."""
    try:
        if publish is not None or container is not None:
            if publish is None or container is None:
                raise CliError("publishing a port needs both --container and --publish")
            if network is not None or group is not None or audit:
                raise CliError("--publish does not go with --network, --group or --audit")
            body = {"container": container, **parse_publish(publish)}
            item = client_of(ctx).request("POST", "/firewalls/ports", body=body)
        else:
            if (network is None) == (group is None):
                raise CliError("give exactly one of --network or --group (or --publish)")
            rule: dict[str, Any] = {
                "target_kind": "network" if network is not None else "group",
                "target": network if network is not None else group,
                "action": "allow" if allow else "deny",
                "source": parse_source(source),
                "protocol": proto,
                "ports": ports or [],
                "audit": audit,
            }
            if position is not None:
                rule["position"] = position
            item = client_of(ctx).request("POST", "/firewalls/rules", body=rule)
    except CliError as exc:
        fail(str(exc))
    _firewall_item(item, as_json)


@app.command("delete")
def firewall_delete(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(metavar="ID", help="Rule or published port id.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a firewall rule or unpublish a port."""
    item = call(ctx, "DELETE", f"/firewalls/{segment(item_id)}")
    if as_json:
        render.print_json(item)
    else:
        what = "published port" if item.get("type") == "port" else "firewall rule"
        render.say(f"deleted {what} {item_id}")


def _set_audit(ctx: typer.Context, rule_id: str, audit: bool, as_json: bool) -> None:
    rule = call(ctx, "PATCH", f"/firewalls/rules/{segment(rule_id)}", body={"audit": audit})
    if as_json:
        render.print_json(rule)
    else:
        render.say(f"firewall rule {rule.get('id')}: {render.mode(rule.get('audit'))}")


RuleId = Annotated[str, typer.Argument(metavar="RULE", help="Firewall rule id.")]


@app.command("enforce")
def firewall_enforce(ctx: typer.Context, rule_id: RuleId, as_json: JsonOpt = False) -> None:
    """Enforce a rule in audit mode: from now on it decides, and the connections
    it denies are revoked at once."""
    _set_audit(ctx, rule_id, False, as_json)


@app.command("audit")
def firewall_audit(ctx: typer.Context, rule_id: RuleId, as_json: JsonOpt = False) -> None:
    """Put a rule in audit mode: it decides nothing; the connection log says what it
    would have decided (`daolictl connections --rule RULE`)."""
    _set_audit(ctx, rule_id, True, as_json)
