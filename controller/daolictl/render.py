"""How daolictl prints: rich tables for people (no colour and no wrapping when piped),
the API's JSON as it is for scripts (`--json`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

Column = tuple[str, str, Callable[[Any], str]]  # key, title, how to show the value


def console() -> Console:
    if sys.stdout.isatty():
        return Console()
    return Console(width=240, no_color=True)  # piped: never wrap or fold rows


def text(value: Any) -> str:
    """A value in a cell: `-` for nothing, a list as `a -> b`."""
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return " -> ".join(str(v) for v in value) if value else "-"
    return str(value)


def seconds(value: Any) -> str:
    """A duration in seconds, as `1.5s`, `2m05s` or `1h02m`."""
    if value is None:
        return "-"
    try:
        secs = float(value)
    except (TypeError, ValueError):
        return str(value)
    if secs < 60:
        return f"{secs:.1f}s"
    minutes, sec = divmod(int(secs), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def short(value: Any) -> str:
    """An id, cut to 12 characters like Docker's."""
    return str(value)[:12] if value else "-"


def yes_no(value: Any) -> str:
    return "yes" if value is True else "no" if value is False else text(value)


def mode(audit: Any) -> str:
    """A firewall rule's or pair policy's mode: "audit" (decides nothing) or "enforced"."""
    return "audit" if audit else "enforced"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str) -> None:
    out = console()
    if not rows:
        out.print(empty, style="dim")
        return
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for _, title, _fmt in columns:
        grid.add_column(title, no_wrap=True)
    for row in rows:
        grid.add_row(*(fmt(row.get(key)) for key, _, fmt in columns))
    out.print(grid)


def print_list(
    as_json: bool, rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str
) -> None:
    """A list command's output: the API's answer as JSON, or as a table."""
    if as_json:
        print_json(rows)
    else:
        table(rows, columns, empty)


def record(item: dict[str, Any], fields: Sequence[str] | None = None) -> None:
    """One item as `field value` lines (`fields` in this order, default all)."""
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    for key in fields or list(item):
        grid.add_row(key, text(item.get(key)))
    console().print(grid)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def print_item(item: dict[str, Any], as_json: bool, fields: Sequence[str]) -> None:
    """A show/create command's output: the API's answer as JSON, or as a record."""
    if as_json:
        print_json(item)
    else:
        record(item, fields)


def say(message: str) -> None:
    """A line of plain text (no rich markup, no highlighting)."""
    console().print(message, markup=False, highlight=False)
