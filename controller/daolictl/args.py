"""Arguments shared by daolictl's commands, and the parsing of the compact forms an
operator types (`--from network:web`, `--publish 8080:80/tcp`, `--port 53/udp`)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from controller.cliutil import CliError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AuditOpt = Annotated[bool, typer.Option(
    "--audit", help="Audit mode: decide nothing, log what it would decide (enforce it later).")]
HostOpt = Annotated[str | None, typer.Option("--host", "-H", help="Only this host.")]

SOURCE_KINDS = ("container", "network", "group", "cidr")


def segment(value: str) -> str:
    """One URL path segment, escaped."""
    return quote(value, safe="")


def parse_source(text: str) -> dict[str, Any]:
    """`any`, `container:NAME`, `network:NAME`, `group:NAME`, `cidr:CIDR` or a CIDR/address."""
    text = text.strip()
    if text == "any":
        return {"kind": "any"}
    kind, sep, value = text.partition(":")
    if sep and kind in SOURCE_KINDS and value:
        return {"kind": kind, "value": value}
    if not sep and (("/" in text) or text.replace(".", "").isdigit()):
        return {"kind": "cidr", "value": text}
    raise CliError(
        f"--from {text!r}: use any, container:NAME, network:NAME, group:NAME or a CIDR"
    )


def _number(text: str) -> int:
    """A port as typed: ASCII digits only (int() also takes '8_080', '+80', '٨٠').
    Its range is the API's to check."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def parse_publish(text: str) -> dict[str, Any]:
    """`HOST_PORT[:CONTAINER_PORT][/PROTO]` -> the published port's fields."""
    spec, _, proto = text.strip().partition("/")
    host_text, _, container_text = spec.partition(":")
    try:
        host_port = _number(host_text)
        container_port = _number(container_text) if container_text else host_port
    except ValueError:
        raise CliError(
            f"--publish {text!r}: expected HOST_PORT[:CONTAINER_PORT][/tcp|udp], e.g. 8080:80"
        ) from None
    return {"host_port": host_port, "container_port": container_port, "protocol": proto or "tcp"}


def parse_port(text: str) -> tuple[str, int | None]:
    """`--port` of trace: `80`, `80/tcp`, `53/udp`, `icmp` -> (proto, port)."""
    text = text.strip().lower()
    port_text, _, proto = text.partition("/")
    if port_text in ("tcp", "udp", "icmp") and not proto:
        return port_text, None
    try:
        port = _number(port_text)
    except ValueError:
        raise CliError(f"--port {text!r}: expected PORT[/tcp|udp] or icmp, e.g. 80/tcp") from None
    return proto or "tcp", port
