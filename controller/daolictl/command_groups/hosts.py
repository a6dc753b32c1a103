"""`daolictl host ...`: the registered Docker hosts, replacing a host's WireGuard key,
and removing a host."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.daolictl import render
from controller.daolictl.args import JsonOpt, segment
from controller.daolictl.client import call

app = typer.Typer(help="Registered Docker hosts.", no_args_is_help=True)


def _dpid(value: Any) -> str:
    return f"{value:016x}" if isinstance(value, int) else render.text(value)


@app.command("list")
def host_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List registered hosts."""
    hosts = call(ctx, "GET", "/hosts")
    render.print_list(
        as_json,
        hosts,
        [
            ("name", "NAME", render.text),
            ("address", "ADDRESS", render.text),
            ("site", "SITE", render.text),
            ("dpid", "DPID", _dpid),
            ("registered_at", "REGISTERED", render.text),
        ],
        "no hosts",
    )


@app.command("rotate-key")
def host_rotate_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="HOST", help="Host whose key to replace.")],
    as_json: JsonOpt = False,
) -> None:
    """Replace a host's WireGuard key pair (live connections pause briefly)."""
    host = call(ctx, "POST", f"/hosts/{segment(name)}/rotate-key")
    if as_json:
        render.print_json(host)
        return
    typer.echo(f"rotated the key of {name}: public key {host.get('wg_public_key')}")


@app.command("remove")
def host_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="HOST", help="Host to remove.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Remove it even with containers registered: their endpoints go too.",
    )] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a host: its records, its WireGuard peer on every other host, its routes
    (refused while it has containers, unless --force).  Its agent stops; restarted, it
    registers the host again as a new host."""
    params = {"force": "true"} if force else None
    host = call(ctx, "DELETE", f"/hosts/{segment(name)}", params=params)
    if as_json:
        render.print_json(host)
        return
    gone = host.get("removed_containers") or []
    with_containers = f" and its {len(gone)} container(s): {', '.join(gone)}" if gone else ""
    render.say(f"removed host {name}{with_containers}")
