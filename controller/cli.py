"""daolictl: the operator CLI, a client of the controller's REST API.

    export DAOLINET_URL=http://controller:8080 DAOLINET_TOKEN=...
    daolictl network create web 10.1.0.0/24
    daolictl container list --host h1
    daolictl route list --json

Human tables by default, `--json` for scripts.  An API error prints the API's
message on one line to stderr and exits 1; so does an unreachable API.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from controller.cliutil import run_app

DEFAULT_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
TIMEOUT = 15.0


class CliError(Exception):
    """A failure to report on one line (no traceback)."""


@dataclass
class Client:
    url: str
    token: str | None
    timeout: float = TIMEOUT

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        target = self.url.rstrip("/") + API_PREFIX + path
        try:
            with httpx.Client(timeout=self.timeout) as http:
                response = http.request(method, target, json=body, params=params, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise CliError(f"invalid API URL {self.url!r}: {exc}") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(f"cannot reach the daolinet API at {self.url}: {reason}") from None
        if response.status_code >= 400:
            raise CliError(self._error_message(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"unexpected answer from {target} (HTTP {response.status_code}): not JSON"
            ) from None

    def _error_message(self, response: httpx.Response) -> str:
        detail: Any
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if detail is None:
            text = response.text.strip().splitlines()
            detail = text[0] if text else response.reason_phrase
        if not isinstance(detail, str):
            detail = json.dumps(detail)
        detail = " ".join(detail.split())  # one line
        if response.status_code == 401 and not self.token:
            detail += " (set DAOLINET_TOKEN or pass --token)"
        return f"{detail} (HTTP {response.status_code})"


app = typer.Typer(
    name="daolictl",
    help="Operate a daolinet controller through its REST API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
network_app = typer.Typer(help="Networks (subnets containers attach to).", no_args_is_help=True)
container_app = typer.Typer(help="Container endpoints.", no_args_is_help=True)
host_app = typer.Typer(help="Registered Docker hosts.", no_args_is_help=True)
route_app = typer.Typer(help="Live hot-plug connections.", no_args_is_help=True)
app.add_typer(network_app, name="network")
app.add_typer(container_app, name="container")
app.add_typer(host_app, name="host")
app.add_typer(route_app, name="route")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
HostOpt = Annotated[str | None, typer.Option("--host", "-H", help="Only this host.")]


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option("--url", envvar="DAOLINET_URL", help="Controller API base URL.")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="DAOLINET_TOKEN", help="API bearer token."),
    ] = None,
) -> None:
    ctx.obj = Client(url=url, token=token)


# --- output helpers -------------------------------------------------------------------


def _client(ctx: typer.Context) -> Client:
    client = ctx.obj
    assert isinstance(client, Client)
    return client


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _call(
    ctx: typer.Context,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> Any:
    try:
        return _client(ctx).request(method, path, body=body, params=params)
    except CliError as exc:
        _fail(str(exc))


def _console() -> Console:
    if sys.stdout.isatty():
        return Console()
    return Console(width=240, no_color=True)  # piped: never wrap or fold rows


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return " -> ".join(str(v) for v in value) if value else "-"
    return str(value)


def _seconds(value: Any) -> str:
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


Column = tuple[str, str, Callable[[Any], str]]


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str) -> None:
    console = _console()
    if not rows:
        console.print(empty, style="dim")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for _, title, _fmt in columns:
        table.add_column(title, no_wrap=True)
    for row in rows:
        table.add_row(*(fmt(row.get(key)) for key, _, fmt in columns))
    console.print(table)


def _record(record: dict[str, Any], fields: Sequence[str] | None = None) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    for key in fields or list(record):
        table.add_row(key, _text(record.get(key)))
    _console().print(table)


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def _short(value: Any) -> str:
    return str(value)[:12] if value else "-"


NETWORK_FIELDS = ["name", "subnet", "gateway", "mtu", "id", "created_at"]
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
    "created_at",
]


# --- network --------------------------------------------------------------------------


@network_app.command("create")
def network_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    subnet: Annotated[str, typer.Argument(help="IPv4 CIDR, e.g. 10.1.0.0/24.")],
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="Default: first address.")
    ] = None,
    mtu: Annotated[int | None, typer.Option("--mtu", help="Default: 1500.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a network."""
    body: dict[str, Any] = {"name": name, "subnet": subnet}
    if gateway is not None:
        body["gateway"] = gateway
    if mtu is not None:
        body["mtu"] = mtu
    network = _call(ctx, "POST", "/networks", body=body)
    if as_json:
        _json(network)
    else:
        _record(network, NETWORK_FIELDS)


@network_app.command("list")
def network_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List networks."""
    networks = _call(ctx, "GET", "/networks")
    if as_json:
        _json(networks)
        return
    _table(
        networks,
        [
            ("name", "NAME", _text),
            ("subnet", "SUBNET", _text),
            ("gateway", "GATEWAY", _text),
            ("mtu", "MTU", _text),
            ("id", "ID", _short),
        ],
        "no networks",
    )


@network_app.command("show")
def network_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one network."""
    network = _call(ctx, "GET", f"/networks/{_seg(name)}")
    if as_json:
        _json(network)
    else:
        _record(network, NETWORK_FIELDS)


@network_app.command("delete")
def network_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Network name.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a network (refused while containers use it)."""
    network = _call(ctx, "DELETE", f"/networks/{_seg(name)}")
    if as_json:
        _json(network)
    else:
        _console().print(f"deleted network {name}", markup=False, highlight=False)


# --- container ------------------------------------------------------------------------


@container_app.command("list")
def container_list(ctx: typer.Context, host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """List container endpoints."""
    params = {"host": host} if host else None
    containers = _call(ctx, "GET", "/containers", params=params)
    if as_json:
        _json(containers)
        return
    _table(
        containers,
        [
            ("name", "NAME", _text),
            ("network", "NETWORK", _text),
            ("host", "HOST", _text),
            ("ip", "IP", _text),
            ("mac", "MAC", _text),
            ("port", "PORT", _text),
            ("id", "ID", _short),
        ],
        "no containers",
    )


@container_app.command("show")
def container_show(
    ctx: typer.Context,
    name_or_id: Annotated[str, typer.Argument(metavar="NAME|ID", help="Container name or id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one container endpoint."""
    endpoint = _call(ctx, "GET", f"/containers/{_seg(name_or_id)}")
    if as_json:
        _json(endpoint)
    else:
        _record(endpoint, CONTAINER_FIELDS)


# --- host -----------------------------------------------------------------------------


@host_app.command("list")
def host_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List registered hosts."""
    hosts = _call(ctx, "GET", "/hosts")
    if as_json:
        _json(hosts)
        return
    _table(
        hosts,
        [
            ("name", "NAME", _text),
            ("address", "ADDRESS", _text),
            ("site", "SITE", _text),
            ("dpid", "DPID", _dpid),
            ("registered_at", "REGISTERED", _text),
        ],
        "no hosts",
    )


def _dpid(value: Any) -> str:
    return f"{value:016x}" if isinstance(value, int) else _text(value)


# --- route ----------------------------------------------------------------------------


@route_app.command("list")
def route_list(ctx: typer.Context, host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """List live connections (hot-plug routes)."""
    params = {"host": host} if host else None
    routes = _call(ctx, "GET", "/routes", params=params)
    if as_json:
        _json(routes)
        return
    _table(
        routes,
        [
            ("src", "SRC", _text),
            ("dst", "DST", _text),
            ("src_host", "SRC HOST", _text),
            ("dst_host", "DST HOST", _text),
            ("path", "PATH", _text),
            ("age", "AGE", _seconds),
            ("idle", "IDLE", _seconds),
        ],
        "no live connections",
    )


def _seg(value: str) -> str:
    """One URL path segment, escaped."""
    return quote(value, safe="")


def run() -> None:
    """Entry point of the `daolictl` console script."""
    sys.exit(run_app(app, "daolictl"))


if __name__ == "__main__":
    run()
