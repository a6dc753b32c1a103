"""`daolictl container ...`: container endpoints, and moving a container to another host."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.daolictl import render
from controller.daolictl.args import HostOpt, JsonOpt, segment
from controller.daolictl.client import call, client_of

app = typer.Typer(help="Container endpoints.", no_args_is_help=True)

CONTAINER_FIELDS = [
    "name",
    "id",
    "network",
    "host",
    "ip",
    "prefixlen",
    "gateway",
    "mac",
    "mtu",
    "port",
    "docker_id",
    "created_at",
]
MOVE_TIMEOUT = 180.0  # seconds: a move stops, re-creates and starts a Docker container


@app.command("list")
def container_list(ctx: typer.Context, host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """List container endpoints."""
    params = {"host": host} if host else None
    containers = call(ctx, "GET", "/containers", params=params)
    render.print_list(
        as_json,
        containers,
        [
            ("name", "NAME", render.text),
            ("network", "NETWORK", render.text),
            ("host", "HOST", render.text),
            ("ip", "IP", render.text),
            ("mac", "MAC", render.text),
            ("port", "PORT", render.text),
            ("id", "ID", render.short),
        ],
        "no containers",
    )


@app.command("show")
def container_show(
    ctx: typer.Context,
    name_or_id: Annotated[str, typer.Argument(metavar="NAME|ID", help="Container name or id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one container endpoint."""
    endpoint = call(ctx, "GET", f"/containers/{segment(name_or_id)}")
    render.print_item(endpoint, as_json, CONTAINER_FIELDS)


@app.command("move")
def container_move(
    ctx: typer.Context,
    name_or_id: Annotated[
        str, typer.Argument(metavar="NAME|ID", help="Container name, id or Docker id.")
    ],
    host: Annotated[str, typer.Option("--host", "-H", help="Host to move the container to.")],
    as_json: JsonOpt = False,
) -> None:
    """Re-create a Docker container on another host with the same IP and MAC."""
    endpoint = call(
        ctx, "POST", f"/containers/{segment(name_or_id)}/move", body={"host": host},
        timeout=max(client_of(ctx).timeout, MOVE_TIMEOUT),
    )  # fmt: skip
    if as_json:
        render.print_json(endpoint)
    else:
        render.say(
            f"moved {endpoint.get('name')} to {endpoint.get('host')} "
            f"ip={endpoint.get('ip')} mac={endpoint.get('mac')}"
        )
