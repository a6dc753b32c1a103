"""daolictl: the operator CLI, a client of the controller's REST API.

    export DAOLINET_URL=http://controller:8080 DAOLINET_TOKEN=...
    daolictl network create web 10.1.0.0/24
    daolictl container list --host h1
    daolictl route list --json

Human tables by default, `--json` for scripts.  An API error prints the API's
message on one line to stderr and exits 1; so does an unreachable API.
"""

from __future__ import annotations

import functools
import json
import ssl
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


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR),
    loaded once: every httpx.Client would load the CA bundle again (~20 ms)."""
    return httpx.create_ssl_context()


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
            with httpx.Client(timeout=self.timeout, verify=_tls()) as http:
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
replica_app = typer.Typer(
    help="Controller replicas (which one leads, the OpenFlow targets).", no_args_is_help=True
)
group_app = typer.Typer(
    help="Groups of networks (member networks reach each other).", no_args_is_help=True
)
policy_app = typer.Typer(
    help="Pair policies (set with `connect` / `disconnect`).", no_args_is_help=True
)
firewall_app = typer.Typer(
    help="Firewall rules on networks and groups, and published ports.", no_args_is_help=True
)
app.add_typer(network_app, name="network")
app.add_typer(container_app, name="container")
app.add_typer(host_app, name="host")
app.add_typer(route_app, name="route")
app.add_typer(replica_app, name="replica")
app.add_typer(group_app, name="group")
app.add_typer(policy_app, name="policy")
app.add_typer(firewall_app, name="firewall")

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


def _print_list(
    as_json: bool, rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str
) -> None:
    """A list command's output: the API's answer as JSON, or as a table."""
    if as_json:
        _json(rows)
    else:
        _table(rows, columns, empty)


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


NETWORK_FIELDS = ["name", "subnet", "gateway", "mtu", "external", "id", "created_at"]
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
    external: Annotated[
        bool, typer.Option("--external", help="Containers may reach outside daolinet.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a network."""
    body: dict[str, Any] = {"name": name, "subnet": subnet}
    if external:
        body["external"] = True
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
    _print_list(
        as_json,
        networks,
        [
            ("name", "NAME", _text),
            ("subnet", "SUBNET", _text),
            ("gateway", "GATEWAY", _text),
            ("mtu", "MTU", _text),
            ("external", "EXTERNAL", _yes_no),
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


@network_app.command("set")
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
    network = _call(ctx, "PATCH", f"/networks/{_seg(name)}", body=body)
    if as_json:
        _json(network)
    else:
        _record(network, NETWORK_FIELDS)


def _yes_no(value: Any) -> str:
    return "yes" if value is True else "no" if value is False else _text(value)


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
    _print_list(
        as_json,
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


@container_app.command("move")
def container_move(
    ctx: typer.Context,
    name_or_id: Annotated[
        str, typer.Argument(metavar="NAME|ID", help="Container name, id or Docker id.")
    ],
    host: Annotated[str, typer.Option("--host", "-H", help="Host to move the container to.")],
    as_json: JsonOpt = False,
) -> None:
    """Re-create a Docker container on another host with the same IP and MAC."""
    client = _client(ctx)
    client.timeout = max(client.timeout, 180.0)
    try:
        endpoint = client.request(
            "POST", f"/containers/{_seg(name_or_id)}/move", body={"host": host}
        )
    except CliError as exc:
        _fail(str(exc))
    if as_json:
        _json(endpoint)
    else:
        _console().print(
            f"moved {endpoint.get('name')} to {endpoint.get('host')} "
            f"ip={endpoint.get('ip')} mac={endpoint.get('mac')}",
            markup=False, highlight=False,
        )


# --- host -----------------------------------------------------------------------------


@host_app.command("list")
def host_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List registered hosts."""
    hosts = _call(ctx, "GET", "/hosts")
    _print_list(
        as_json,
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


@host_app.command("rotate-key")
def host_rotate_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="HOST", help="Host whose key to replace.")],
    as_json: JsonOpt = False,
) -> None:
    """Replace a host's WireGuard key pair (live connections pause briefly)."""
    host = _call(ctx, "POST", f"/hosts/{_seg(name)}/rotate-key")
    if as_json:
        _json(host)
        return
    typer.echo(f"rotated the key of {name}: public key {host.get('wg_public_key')}")


def _dpid(value: Any) -> str:
    return f"{value:016x}" if isinstance(value, int) else _text(value)


# --- route ----------------------------------------------------------------------------


@route_app.command("list")
def route_list(ctx: typer.Context, host: HostOpt = None, as_json: JsonOpt = False) -> None:
    """List live connections (hot-plug routes)."""
    params = {"host": host} if host else None
    routes = _call(ctx, "GET", "/routes", params=params)
    _print_list(
        as_json,
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


# --- replica --------------------------------------------------------------------------


@replica_app.command("list")
def replica_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the controller replicas and which one leads."""
    answer = _call(ctx, "GET", "/replicas")
    if as_json:
        _json(answer)
        return
    _table(
        answer.get("replicas", []),
        [
            ("name", "NAME", _text),
            ("site", "SITE", _text),
            ("leader", "LEADER", _yes_no),
            ("member", "MEMBER", _yes_no),
            ("switches", "SWITCHES", lambda v: ",".join(v) if v else "-"),
            ("api", "API", _text),
            ("openflow", "OPENFLOW", _text),
            ("openflow_remote", "OPENFLOW REMOTE", _text),
        ],
        "no replicas",
    )
    if answer.get("leader"):
        _say(f"leader {answer['leader']}, generation {_text(answer.get('generation'))}")
    else:
        _say("no replica leads now (an election is under way)")


@replica_app.command("remove")
def replica_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Replica name (see `replica list`).")],
) -> None:
    """Forget a replica taken out of service: hosts that register no longer get its
    OpenFlow target (refused while it leads or its API answers)."""
    _call(ctx, "DELETE", f"/replicas/{_seg(name)}")
    _say(f"removed replica {name}")


# --- group ----------------------------------------------------------------------------

GROUP_FIELDS = ["name", "networks", "created_at"]


def _members(value: Any) -> str:
    return ", ".join(str(v) for v in value) if value else "-"


def _group_out(group: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _json(group)
    else:
        _record({**group, "networks": _members(group.get("networks"))}, GROUP_FIELDS)


@group_app.command("list")
def group_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups."""
    groups = _call(ctx, "GET", "/groups")
    _print_list(
        as_json, groups, [("name", "NAME", _text), ("networks", "NETWORKS", _members)], "no groups"
    )


@group_app.command("show")
def group_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one group."""
    _group_out(_call(ctx, "GET", f"/groups/{_seg(name)}"), as_json)


@group_app.command("create")
def group_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    networks: Annotated[
        list[str] | None, typer.Argument(help="Member networks.", show_default=False)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group (networks of one group reach each other)."""
    body = {"name": name, "networks": networks or []}
    _group_out(_call(ctx, "POST", "/groups", body=body), as_json)


@group_app.command("delete")
def group_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a group and the firewall rules on it."""
    group = _call(ctx, "DELETE", f"/groups/{_seg(name)}")
    if as_json:
        _json(group)
    else:
        _say(f"deleted group {name}")


@group_app.command("add")
def group_add(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="Group name.")],
    network: Annotated[str, typer.Argument(help="Network to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add a network to a group."""
    body = {"network": network}
    _group_out(_call(ctx, "POST", f"/groups/{_seg(group)}/members", body=body), as_json)


@group_app.command("remove")
def group_remove(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="Group name.")],
    network: Annotated[str, typer.Argument(help="Network to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a network from a group."""
    path = f"/groups/{_seg(group)}/members/{_seg(network)}"
    _group_out(_call(ctx, "DELETE", path), as_json)


# --- pair policies --------------------------------------------------------------------

ContainerA = Annotated[str, typer.Argument(metavar="A", help="Container name or id.")]
ContainerB = Annotated[str, typer.Argument(metavar="B", help="Container name or id.")]
POLICY_WORDS = {"allow": "connected", "deny": "disconnected"}


def _policy_path(a: str, b: str) -> str:
    return f"/policies/{_seg(a)}/{_seg(b)}"


def _policy_out(policy: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _json(policy)
    else:
        word = POLICY_WORDS.get(str(policy.get("action")), str(policy.get("action")))
        _say(f"{policy.get('a')} <-> {policy.get('b')}: {word} ({policy.get('action')})")


@app.command("connect")
def connect(ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False) -> None:
    """Allow traffic between two containers, whatever else the policy says."""
    _policy_out(_call(ctx, "PUT", _policy_path(a, b), body={"action": "allow"}), as_json)


@app.command("disconnect")
def disconnect(
    ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False
) -> None:
    """Deny traffic between two containers, whatever else the policy says."""
    _policy_out(_call(ctx, "PUT", _policy_path(a, b), body={"action": "deny"}), as_json)


@policy_app.command("show")
def policy_show(ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False) -> None:
    """Show the pair policy between two containers."""
    _policy_out(_call(ctx, "GET", _policy_path(a, b)), as_json)


@policy_app.command("clear")
def policy_clear(
    ctx: typer.Context, a: ContainerA, b: ContainerB, as_json: JsonOpt = False
) -> None:
    """Remove the pair policy between two containers."""
    policy = _call(ctx, "DELETE", _policy_path(a, b))
    if as_json:
        _json(policy)
    else:
        _say(f"cleared pair policy {policy.get('a')} <-> {policy.get('b')}")


@policy_app.command("list")
def policy_list(
    ctx: typer.Context,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Only this container's.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List pair policies."""
    params = {"container": container} if container else None
    policies = _call(ctx, "GET", "/policies", params=params)
    _print_list(
        as_json,
        policies,
        [("a", "A", _text), ("b", "B", _text), ("action", "ACTION", _text),
         ("created_at", "CREATED", _text)],
        "no pair policies",
    )


# --- firewall -------------------------------------------------------------------------

SOURCE_KINDS = ("container", "network", "group", "cidr")


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


def parse_publish(text: str) -> dict[str, Any]:
    """`HOST_PORT[:CONTAINER_PORT][/PROTO]` -> the published port's fields."""
    spec, _, proto = text.strip().partition("/")
    host_text, _, container_text = spec.partition(":")
    try:
        host_port = int(host_text)
        container_port = int(container_text) if container_text else host_port
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
        port = int(port_text)
    except ValueError:
        raise CliError(f"--port {text!r}: expected PORT[/tcp|udp] or icmp, e.g. 80/tcp") from None
    return proto or "tcp", port


def _source_text(value: Any) -> str:
    if not isinstance(value, dict):
        return _text(value)
    if value.get("kind") == "any":
        return "any"
    if value.get("kind") == "cidr":
        return str(value.get("value"))
    return f"{value.get('kind')}:{value.get('value')}"


def _ports_text(value: Any) -> str:
    return ",".join(str(v) for v in value) if value else "any"


RULE_COLUMNS: list[Column] = [
    ("id", "ID", _short),
    ("target", "TARGET", _text),
    ("position", "#", _text),
    ("action", "ACTION", _text),
    ("source", "FROM", _source_text),
    ("protocol", "PROTO", _text),
    ("ports", "PORTS", _ports_text),
]
PORT_COLUMNS: list[Column] = [
    ("id", "ID", _short),
    ("container", "CONTAINER", _text),
    ("host", "HOST", _text),
    ("host_port", "HOST PORT", _text),
    ("container_port", "CONTAINER PORT", _text),
    ("protocol", "PROTO", _text),
]


def _rule_row(rule: dict[str, Any]) -> dict[str, Any]:
    return {**rule, "target": f"{rule.get('target_kind')}:{rule.get('target')}"}


def _firewall_item(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _json(item)
    elif item.get("type") == "port":
        _record(item, ["id", "container", "host", "host_port", "container_port", "protocol",
                       "created_at"])
    else:
        row = {**_rule_row(item), "source": _source_text(item.get("source")),
               "ports": _ports_text(item.get("ports"))}
        _record(row, ["id", "target", "position", "action", "source", "protocol", "ports",
                      "created_at"])


@firewall_app.command("list")
def firewall_list(
    ctx: typer.Context,
    network: Annotated[str | None, typer.Option("--network", "-n", help="Rules on it.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Rules on it.")] = None,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Its published ports.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List firewall rules (in evaluation order) and published ports."""
    params = {k: v for k, v in (("network", network), ("group", group),
                                ("container", container)) if v}
    found = _call(ctx, "GET", "/firewalls", params=params or None)
    if as_json:
        _json(found)
        return
    rules = [_rule_row(r) for r in found.get("rules", [])]
    ports = found.get("ports", [])
    if rules or not ports:
        _table(rules, RULE_COLUMNS, "no firewall rules")
    if ports:
        if rules:
            _say("")
        _table(ports, PORT_COLUMNS, "no published ports")


@firewall_app.command("show")
def firewall_show(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(metavar="ID", help="Rule or published port id.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a firewall rule or a published port."""
    _firewall_item(_call(ctx, "GET", f"/firewalls/{_seg(item_id)}"), as_json)


@firewall_app.command("create")
def firewall_create(
    ctx: typer.Context,
    network: Annotated[
        str | None, typer.Option("--network", "-n", help="Rule on this network.")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Rule on this group.")] = None,
    allow: Annotated[bool, typer.Option("--allow/--deny", help="Rule action.")] = True,
    source: Annotated[
        str,
        typer.Option(
            "--from", help="any, container:NAME, network:NAME, group:NAME or a CIDR."
        ),
    ] = "any",
    proto: Annotated[str, typer.Option("--proto", "-p", help="tcp, udp, icmp or any.")] = "any",
    ports: Annotated[
        list[str] | None,
        typer.Option("--port", help="Destination port or range (repeatable), e.g. 8000-8100."),
    ] = None,
    position: Annotated[
        int | None, typer.Option("--position", help="Insert at (0 = first); default last.")
    ] = None,
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Container to publish a port of.")
    ] = None,
    publish: Annotated[
        str | None,
        typer.Option(
            "--publish", help=r"HOST_PORT\[:CONTAINER_PORT]\[/tcp|udp] (with --container)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a firewall rule (--network or --group) or publish a port (--container --publish)."""
    try:
        if publish is not None or container is not None:
            if publish is None or container is None:
                raise CliError("publishing a port needs both --container and --publish")
            if network is not None or group is not None:
                raise CliError("--publish does not go with --network or --group")
            body = {"container": container, **parse_publish(publish)}
            item = _client(ctx).request("POST", "/firewalls/ports", body=body)
        else:
            if (network is None) == (group is None):
                raise CliError("give exactly one of --network or --group (or --publish)")
            rule: dict[str, Any] = {
                "target_kind": "network" if network is not None else "group",
                "target": network if network is not None else group,
                "action": "allow" if allow else "deny",
                "source": parse_source(source),
                "protocol": proto,
                "ports": ports or [],
            }
            if position is not None:
                rule["position"] = position
            item = _client(ctx).request("POST", "/firewalls/rules", body=rule)
    except CliError as exc:
        _fail(str(exc))
    _firewall_item(item, as_json)


@firewall_app.command("delete")
def firewall_delete(
    ctx: typer.Context,
    item_id: Annotated[str, typer.Argument(metavar="ID", help="Rule or published port id.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a firewall rule or unpublish a port."""
    item = _call(ctx, "DELETE", f"/firewalls/{_seg(item_id)}")
    if as_json:
        _json(item)
    else:
        what = "published port" if item.get("type") == "port" else "firewall rule"
        _say(f"deleted {what} {item_id}")


# --- trace ----------------------------------------------------------------------------


def _end_text(end: Any) -> str:
    if not isinstance(end, dict):
        return _text(end)
    if not end.get("name"):
        return f"{end.get('ip')} (outside daolinet)"
    where = f"network {end.get('network')}, host {end.get('host')}"
    return f"{end.get('name')} {end.get('ip')} ({where})"


@app.command("trace")
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
            _fail(str(exc))
        params["proto"] = proto
        if number is not None:
            params["port"] = str(number)
    answer = _call(ctx, "GET", "/trace", params=params)
    if as_json:
        _json(answer)
        return
    service = str(answer.get("proto"))
    if answer.get("port") is not None:
        service = f"{answer.get('port')}/{service}"
    _record(
        {
            "verdict": answer.get("verdict"),
            "reason": answer.get("reason"),
            "rule": answer.get("rule_id"),
            "from": _end_text(answer.get("src")),
            "to": _end_text(answer.get("dst")),
            "service": service,
            "path": answer.get("path"),
        },
        ["verdict", "reason", "rule", "from", "to", "service", "path"],
    )


def _say(message: str) -> None:
    _console().print(message, markup=False, highlight=False)


def _seg(value: str) -> str:
    """One URL path segment, escaped."""
    return quote(value, safe="")


def run() -> None:
    """Entry point of the `daolictl` console script."""
    sys.exit(run_app(app, "daolictl"))


if __name__ == "__main__":
    run()
