"""`daolictl network ...`: networks, the subnets containers attach to."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.daolictl import render
from controller.daolictl.args import JsonOpt, segment
from controller.daolictl.client import call

app = typer.Typer(help="Networks (subnets containers attach to).", no_args_is_help=True)

NETWORK_FIELDS = [
    "name", "subnet", "gateway", "mtu", "external", "internal", "reserved", "id", "created_at",
]


@app.command("create")
def network_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    subnet: Annotated[str, typer.Argument(help="IPv4 CIDR, e.g. 10.1.0.0/24.")],
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="Default: first address.")
    ] = None,
    mtu: Annotated[int | None, typer.Option("--mtu", help="Default: 1500.")] = None,
    external: Annotated[
        bool, typer.Option("--external", help="Containers may reach outside daolinet.")
    ] = False,
    internal: Annotated[
        bool, typer.Option("--internal", help="No external access, no published ports.")
    ] = False,
    reserve: Annotated[
        list[str] | None,
        typer.Option("--reserve", help="An address no container gets (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a network."""
    body: dict[str, Any] = {"name": name, "subnet": subnet}
    if external:
        body["external"] = True
    if internal:
        body["internal"] = True
    if reserve:
        body["reserved"] = reserve
    if gateway is not None:
        body["gateway"] = gateway
    if mtu is not None:
        body["mtu"] = mtu
    render.print_item(call(ctx, "POST", "/networks", body=body), as_json, NETWORK_FIELDS)


@app.command("list")
def network_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List networks."""
    networks = call(ctx, "GET", "/networks")
    render.print_list(
        as_json,
        networks,
        [
            ("name", "NAME", render.text),
            ("subnet", "SUBNET", render.text),
            ("gateway", "GATEWAY", render.text),
            ("mtu", "MTU", render.text),
            ("external", "EXTERNAL", render.yes_no),
            ("internal", "INTERNAL", render.yes_no),
            ("id", "ID", render.short),
        ],
        "no networks",
    )


@app.command("show")
def network_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one network."""
    render.print_item(call(ctx, "GET", f"/networks/{segment(name)}"), as_json, NETWORK_FIELDS)


@app.command("set")
def network_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    external: Annotated[
        bool | None,
        typer.Option("--external/--no-external", help="Containers may reach outside daolinet."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a network's options."""
    body: dict[str, Any] = {}
    if external is not None:
        body["external"] = external
    network = call(ctx, "PATCH", f"/networks/{segment(name)}", body=body)
    render.print_item(network, as_json, NETWORK_FIELDS)


@app.command("delete")
def network_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a network (refused while containers use it)."""
    network = call(ctx, "DELETE", f"/networks/{segment(name)}")
    if as_json:
        render.print_json(network)
    else:
        render.say(f"deleted network {name}")
