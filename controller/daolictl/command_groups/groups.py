"""`daolictl group ...`: groups of networks (the member networks reach each other)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.daolictl import render
from controller.daolictl.args import JsonOpt, segment
from controller.daolictl.client import call

app = typer.Typer(
    help="Groups of networks (member networks reach each other).", no_args_is_help=True
)

GROUP_FIELDS = ["name", "networks", "created_at"]


def _members(value: Any) -> str:
    return ", ".join(str(v) for v in value) if value else "-"


def _group_out(group: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.print_json(group)
    else:
        render.record({**group, "networks": _members(group.get("networks"))}, GROUP_FIELDS)


@app.command("list")
def group_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups."""
    groups = call(ctx, "GET", "/groups")
    render.print_list(
        as_json,
        groups,
        [("name", "NAME", render.text), ("networks", "NETWORKS", _members)],
        "no groups",
    )


@app.command("show")
def group_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one group."""
    _group_out(call(ctx, "GET", f"/groups/{segment(name)}"), as_json)


@app.command("create")
def group_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    networks: Annotated[
        list[str] | None, typer.Argument(help="Member networks.", show_default=False)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group (networks of one group reach each other)."""
    body = {"name": name, "networks": networks or []}
    _group_out(call(ctx, "POST", "/groups", body=body), as_json)


@app.command("delete")
def group_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a group and the firewall rules on it."""
    group = call(ctx, "DELETE", f"/groups/{segment(name)}")
    if as_json:
        render.print_json(group)
    else:
        render.say(f"deleted group {name}")


@app.command("add")
def group_add(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="Group name.")],
    network: Annotated[str, typer.Argument(help="Network to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add a network to a group."""
    body = {"network": network}
    _group_out(call(ctx, "POST", f"/groups/{segment(group)}/members", body=body), as_json)


@app.command("remove")
def group_remove(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="Group name.")],
    network: Annotated[str, typer.Argument(help="Network to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a network from a group."""
    path = f"/groups/{segment(group)}/members/{segment(network)}"
    _group_out(call(ctx, "DELETE", path), as_json)
