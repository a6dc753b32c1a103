"""`daolictl connections`: the connection log (GET /connections): every decision,
revocation and expiry, filtered; `--follow` asks again every second for what came
after the last entry shown, like `tail -f`."""

from __future__ import annotations

import datetime
import json
import time
from typing import Annotated, Any

import typer

from controller.daolictl import render
from controller.daolictl.args import JsonOpt
from controller.daolictl.client import call

COLUMNS: list[render.Column] = [
    ("time", "TIME", lambda t: _clock(t)),
    ("event", "EVENT", render.text),
    ("src", "SRC", lambda end: _end(end)),
    ("dst", "DST", lambda end: _end(end)),
    ("proto", "PROTO", render.text),
    ("decided", "DECIDED BY", render.text),
    ("path", "PATH", render.text),
    ("count", "COUNT", render.text),
    ("packets", "PACKETS", render.text),
    ("bytes", "BYTES", render.text),
    ("duration", "DURATION", render.seconds),
    ("note", "NOTE", render.text),
]


def _clock(t: Any) -> str:
    if t is None:
        return "-"
    at = datetime.datetime.fromtimestamp(float(t), datetime.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _end(end: Any) -> str:
    """`container (ip:port)`, or the address of an end outside daolinet."""
    if not isinstance(end, dict):
        return "-"
    addr = f"{end.get('ip')}:{end['port']}" if end.get("port") is not None else str(end.get("ip"))
    return f"{end['container']} ({addr})" if end.get("container") else addr


def _decided(row: dict[str, Any]) -> str:
    rule = row.get("rule_id")
    return f"{row.get('kind')} {rule[:8]}" if rule else str(row.get("reason") or row.get("kind"))


def _note(row: dict[str, Any]) -> str:
    """What audited rules would have decided, and what ended a revoked connection."""
    notes = [
        f"audit: {a.get('kind')} {str(a.get('id'))[:8]} would {a.get('would')}"
        for a in row.get("audit") or () if isinstance(a, dict)
    ]
    if row.get("ended_by"):
        notes.append(str(row["ended_by"]))
    return "; ".join(notes) or "-"


def _show(rows: list[dict[str, Any]], as_json: bool, follow: bool) -> None:
    if follow and not rows:
        return
    if as_json and follow:  # one object per line, for a pipe
        for row in rows:
            typer.echo(json.dumps(row, separators=(",", ":")))
        return
    if as_json:
        render.print_json(rows)
        return
    render.table([dict(r, decided=_decided(r), note=_note(r)) for r in rows], COLUMNS,
                 "no entries")


def connections(
    ctx: typer.Context,
    container: Annotated[str | None, typer.Option(help="Either end's container.")] = None,
    network: Annotated[str | None, typer.Option(help="Either end's network.")] = None,
    host: Annotated[str | None, typer.Option(
        "--host", "-H", help="Either end's host, or the host that saw it.")] = None,
    verdict: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    event: Annotated[
        str | None, typer.Option(help="allowed, denied, revoked or expired.")] = None,
    rule: Annotated[str | None, typer.Option(
        help="A firewall rule's id (or a prefix) that decided or was audited.")] = None,
    kind: Annotated[str | None, typer.Option(
        help="What decided: pair, firewall, network, group or default.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time (ISO 8601 or epoch seconds).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time.")] = None,
    limit: Annotated[int, typer.Option(help="Entries, at most (the API's bound: 1000).")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries.")] = False,
    every: Annotated[float, typer.Option(help="Seconds between two asks (--follow).",
                                         min=0.1)] = 1.0,
    polls: Annotated[int, typer.Option(hidden=True, help="Stop --follow after N asks.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """The connection log: decisions, revocations and expiries, oldest first."""
    params = {k: str(v) for k, v in {
        "container": container, "network": network, "host": host, "verdict": verdict,
        "event": event, "rule": rule, "kind": kind, "since": since, "until": until, "limit": limit,
    }.items() if v is not None}
    page = call(ctx, "GET", "/connections", params=params)
    _show(page["entries"], as_json, follow)
    asked = 1
    cursor = page.get("next_after")
    while follow and (polls == 0 or asked < polls):
        try:
            time.sleep(every)
        except KeyboardInterrupt:
            return
        ask = dict(params, after=str(cursor)) if cursor is not None else params
        page = call(ctx, "GET", "/connections", params=ask)
        asked += 1
        if page["entries"]:
            _show(page["entries"], as_json, follow)
        cursor = page.get("next_after", cursor)
