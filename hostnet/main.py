"""`daolinet-hostnet`: the host agent and its attach/detach client.

Every failure (bad flag, unreachable agent, an error answer) is one line on
stderr and exit code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from controller.cliutil import run_app
from hostnet.agent.agent import run_agent
from hostnet.agent.config import DEFAULT_SOCKET, AgentConfig
from hostnet.docker.engine import DEFAULT_DOCKER_HOST
from hostnet.docker.plugin import DEFAULT_PLUGIN_SOCKET

PROG = "daolinet-hostnet"

app = typer.Typer(
    name=PROG,
    help="daolinet host agent: bridge, kernel routes, container attach/detach.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class CliError(Exception):
    """An error shown as one line on stderr, exit code 1."""


class DatapathType(StrEnum):
    auto = "auto"
    system = "system"
    netdev = "netdev"


SocketOpt = Annotated[
    Path, typer.Option("--socket", help="Unix socket of the local agent.")
]


@app.command()
def agent(
    controller: Annotated[
        str,
        typer.Option(
            help="Controller base URL, e.g. http://10.0.0.1:8080; replicas comma-separated "
            "(http://10.0.0.1:8080,http://10.0.0.2:8080): the agent uses the leader."
        ),
    ],
    token_file: Annotated[
        Path, typer.Option("--token-file", help="File holding the API bearer token.")
    ],
    host: Annotated[str, typer.Option("--host", help="This host's name in daolinet.")],
    ovsdb: Annotated[str, typer.Option(help="OVSDB target, e.g. unix:/run/openvswitch/db.sock.")],
    bridge: Annotated[str, typer.Option(help="OVS bridge name.")] = "br-dl",
    address: Annotated[
        str | None,
        typer.Option(help="Underlay address (default: source address towards the controller)."),
    ] = None,
    socket: SocketOpt = Path(DEFAULT_SOCKET),
    site: Annotated[str, typer.Option(help="Site of this host.")] = "default",
    datapath_type: Annotated[
        DatapathType, typer.Option("--datapath-type", help="OVS datapath (auto detects).")
    ] = DatapathType.auto,
    connect_timeout: Annotated[
        float,
        typer.Option("--connect-timeout", help="Seconds to wait for the controller at startup."),
    ] = 30.0,
    plugin_socket: Annotated[
        str,
        typer.Option(
            "--plugin-socket",
            help="Socket of the Docker network/IPAM plugin (empty: no Docker plugin).",
        ),
    ] = DEFAULT_PLUGIN_SOCKET,
    docker_host: Annotated[
        str, typer.Option("--docker-host", help="Docker API of this host (unix:///PATH).")
    ] = DEFAULT_DOCKER_HOST,
    wireguard: Annotated[
        Path | None,
        typer.Option(
            "--wireguard",
            help="WireGuard provisioning file (see `wg-up`): tunnel to other sites.",
        ),
    ] = None,
) -> None:
    """Run the host agent (until SIGTERM/SIGINT)."""
    if plugin_socket and not docker_host.startswith("unix://"):
        raise CliError(f"--docker-host: {docker_host!r} is not unix:///PATH")
    if address is not None:
        import ipaddress

        try:
            ipaddress.IPv4Address(address)
        except ValueError as exc:
            raise CliError(f"--address: {address!r} is not an IPv4 address") from exc
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = AgentConfig(
        controller=controller, token_file=token_file, host=host, ovsdb=ovsdb, bridge=bridge,
        address=address, socket_path=socket, site=site, datapath_type=datapath_type.value,
        connect_timeout=connect_timeout, plugin_socket=plugin_socket, docker_host=docker_host,
        wireguard=wireguard,
    )
    code = run_agent(cfg)
    if code:
        raise typer.Exit(code)


def _call_agent(socket: Path, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    transport = httpx.HTTPTransport(uds=str(socket))
    try:
        with httpx.Client(transport=transport, base_url="http://hostnet", timeout=120) as c:
            resp = c.post(path, json=payload)
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CliError(f"cannot reach the agent at {socket}: {reason}") from exc
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(detail, str):
            detail = " ".join(resp.text.split())[:200] or f"HTTP {resp.status_code}"
        raise CliError(detail)
    if not isinstance(body, dict):
        raise CliError(f"the agent sent an unexpected answer to {path}")
    return body


@app.command()
def attach(
    netns: Annotated[str, typer.Option(help="Named network namespace of the container.")],
    network: Annotated[str, typer.Option(help="daolinet network to join.")],
    ip: Annotated[str | None, typer.Option(help="Address (default: the next free one).")] = None,
    mac: Annotated[str | None, typer.Option(help="MAC (default: derived from the IP).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Container name (default: the netns name).")
    ] = None,
    socket: SocketOpt = Path(DEFAULT_SOCKET),
    as_json: Annotated[bool, typer.Option("--json", help="Print the endpoint as JSON.")] = False,
) -> None:
    """Attach a network namespace to a daolinet network."""
    payload: dict[str, Any] = {"netns": netns, "network": network}
    for key, value in (("ip", ip), ("mac", mac), ("name", name)):
        if value is not None:
            payload[key] = value
    ep = _call_agent(socket, "/v1/attach", payload)
    if as_json:
        typer.echo(json.dumps(ep, sort_keys=True))
    else:
        typer.echo(
            f"attached {ep.get('name')} ip={ep.get('ip')} mac={ep.get('mac')} "
            f"port={ep.get('port')}"
        )


@app.command()
def detach(
    container: Annotated[
        str | None, typer.Argument(metavar="NAME", help="Container name or endpoint id.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Same as NAME.")] = None,
    socket: SocketOpt = Path(DEFAULT_SOCKET),
) -> None:
    """Detach a container from daolinet."""
    if container and name and container != name:
        raise CliError("give the container name once (NAME or --name)")
    target = container or name
    if not target:
        raise CliError("missing container name (NAME or --name)")
    body = _call_agent(socket, "/v1/detach", {"name": target})
    typer.echo(f"detached {body.get('detached', target)}")


@app.command("wg-up")
def wg_up(
    config: Annotated[
        Path, typer.Option("--config", help="WireGuard provisioning file (JSON).")
    ],
) -> None:
    """Create or update this host's WireGuard interface and mesh peers (idempotent).

    Generates the private key on first use (mode 0600; it never leaves the host) and
    prints the public key with the interface facts as JSON.  Peers are the hosts of
    other sites in the file's `hosts`; per-connection allowed-ips an agent holds are
    kept, so it can run again at any time (a host added later) without a restart.
    """
    from hostnet.host.wireguard import WgConfig, WireGuardError, to_json
    from hostnet.host.wireguard import wg_up as provision

    try:
        typer.echo(to_json(provision(WgConfig.load(config))))
    except WireGuardError as exc:
        raise CliError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors are one line on stderr)."""
    return run_app(app, PROG, argv, known=(CliError,))


def run() -> None:
    sys.exit(main())
