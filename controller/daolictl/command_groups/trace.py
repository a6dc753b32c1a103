"""`daolictl trace A B`: would A reach B, what decided it, and the path its packets take."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.cliutil import CliError
from controller.daolictl import render
from controller.daolictl.args import JsonOpt, parse_port
from controller.daolictl.client import call, fail


def _end_text(end: Any) -> str:
    if not isinstance(end, dict):
        return render.text(end)
    if not end.get("name"):
        return f"{end.get('ip')} (outside daolinet)"
    where = f"network {end.get('network')}, host {end.get('host')}"
    return f"{end.get('name')} {end.get('ip')} ({where})"


HOP_NOTES = {"tunnel": "wireguard", "relay": "relay"}  # underlay and container: no note


def path_text(answer: dict[str, Any]) -> list[str]:
    """The path's addresses, a tunnel address marked `(wireguard HOST)` and a relay's
    `(relay HOST)`; a plain address is a host's underlay address or the container's."""
    hops = answer.get("hops")
    if not isinstance(hops, list) or not hops:
        return list(answer.get("path") or [])
    out = []
    for hop in hops:
        note = HOP_NOTES.get(str(hop.get("kind")))
        address = str(hop.get("address"))
        out.append(f"{address} ({note} {hop.get('host')})" if note else address)
    return out


def trace(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(metavar="A", help="Source container (or an IPv4 address).")],
    dst: Annotated[str, typer.Argument(metavar="B", help="Destination container.")],
    port: Annotated[
        str | None,
        typer.Option("--port", help=r"PORT\[/tcp|udp] or icmp (default: tcp, any port)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Would A reach B? The verdict, the rule or policy that decided it, and the path."""
    params: dict[str, str] = {"src": src, "dst": dst}
    if port is not None:
        try:
            proto, number = parse_port(port)
        except CliError as exc:
            fail(str(exc))
        params["proto"] = proto
        if number is not None:
            params["port"] = str(number)
    answer = call(ctx, "GET", "/trace", params=params)
    if as_json:
        render.print_json(answer)
        return
    service = str(answer.get("proto"))
    if answer.get("port") is not None:
        service = f"{answer.get('port')}/{service}"
    fields = ["verdict", "reason", "rule", "from", "to", "service", "path"]
    audit = [f"{a.get('reason')} would {a.get('would')}"
             for a in answer.get("audit") or () if isinstance(a, dict)]
    render.record(
        {
            "verdict": answer.get("verdict"),
            "reason": answer.get("reason"),
            "rule": answer.get("rule_id"),
            "from": _end_text(answer.get("src")),
            "to": _end_text(answer.get("dst")),
            "service": service,
            "path": path_text(answer),
            "audit": "; ".join(audit),
        },
        [*fields, "audit"] if audit else fields,
    )
