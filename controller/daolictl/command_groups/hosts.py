"""`daolictl host ...`: the registered Docker hosts, replacing a host's WireGuard key,
and removing a host."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.daolictl import render
from controller.daolictl.args import JsonOpt, segment
from controller.daolictl.client import call, fail

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


@app.command("revoke")
def host_revoke(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        metavar="[HOST]", help="Host whose certificates to revoke (every one issued "
        "until now).")] = None,
    serial: Annotated[str | None, typer.Option(
        "--serial", help="Revoke only this certificate (hex serial, colons allowed).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with it).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a host's certificates (or one certificate by --serial): its requests
    are refused, its agent stream and switch connections closed.  A new certificate
    (a new key) lets it back."""
    if (name is None) == (serial is None):
        fail("give either HOST or --serial")
    body: dict[str, Any] = {"reason": reason}
    if serial is not None:
        body["serial"] = serial
    else:
        body["host"] = name
    revoked = call(ctx, "POST", "/revocations", body=body)
    if as_json:
        render.print_json(revoked)
        return
    what = f"host {name}" if name is not None else f"certificate serial {revoked.get('serial')}"
    typer.echo(f"revoked {what}")


@app.command("revocations")
def host_revocations(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the revoked hosts and certificates."""
    render.print_list(
        as_json,
        call(ctx, "GET", "/revocations"),
        [
            ("host", "HOST", render.text),
            ("serial", "SERIAL", render.text),
            ("at", "AT", render.text),
            ("reason", "REASON", render.text),
        ],
        "no revocations",
    )
