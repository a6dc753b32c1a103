"""`daolictl route ...`: the live hot-plug connections (GET /routes)."""

from __future__ import annotations

import typer

from controller.daolictl import render
from controller.daolictl.args import HostOpt, JsonOpt
from controller.daolictl.client import call

app = typer.Typer(help="Live hot-plug connections.", no_args_is_help=True)


@app.command("list")
def route_list(ctx: typer.Context, host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """List live connections (hot-plug routes)."""
    params = {"host": host} if host else None
    routes = call(ctx, "GET", "/routes", params=params)
    render.print_list(
        as_json,
        routes,
        [
            ("src", "SRC", render.text),
            ("dst", "DST", render.text),
            ("src_host", "SRC HOST", render.text),
            ("dst_host", "DST HOST", render.text),
            ("path", "PATH", render.text),
            ("age", "AGE", render.seconds),
            ("idle", "IDLE", render.seconds),
        ],
        "no live connections",
    )
