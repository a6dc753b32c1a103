"""`daolinet-hostnet`: the host agent and its attach/detach client.

Each command's options are one pydantic-settings model (the agent's is
hostnet.agent.config.AgentConfig); every option is also settable from the
environment as DAOLINET_<OPTION> (`--token-file`: DAOLINET_TOKEN_FILE), which
`--help` shows.  Every failure (bad flag, unreachable agent, an error answer) is one
line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.cliutil import CliError, run_app
from controller.logs import configure_logging
from hostnet.agent.agent import run_agent
from hostnet.agent.config import DEFAULT_SOCKET, DEFAULT_STATE_DIR, ENV_PREFIX, AgentConfig

PROG = "daolinet-hostnet"
S = TypeVar("S", bound=BaseSettings)

app = typer.Typer(
    name=PROG,
    help="daolinet host agent: bridge, kernel routes, container attach/detach.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class DatapathType(StrEnum):
    auto = "auto"
    system = "system"
    netdev = "netdev"


class AttachOptions(BaseSettings):
    """The options of `daolinet-hostnet attach`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    netns: str = Field(description="Named network namespace of the container.")
    network: str = Field(description="daolinet network to join.")
    ip: str | None = Field(None, description="Address (default: the next free one).")
    mac: str | None = Field(None, description="MAC (default: derived from the IP).")
    name: str | None = Field(None, description="Container name (default: the netns name).")
    socket: Path = Field(Path(DEFAULT_SOCKET), description="Unix socket of the local agent.")
    as_json: bool = Field(
        False, description="Print the endpoint as JSON.",
        validation_alias=AliasChoices("as_json", ENV_PREFIX + "JSON"),
    )


class DetachOptions(BaseSettings):
    """The options of `daolinet-hostnet detach`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    name: str | None = Field(None, description="Same as NAME.")
    socket: Path = Field(Path(DEFAULT_SOCKET), description="Unix socket of the local agent.")


class WgUpOptions(BaseSettings):
    """The options of `daolinet-hostnet wg-up`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    config: Path = Field(description="WireGuard provisioning file (JSON).")


def option(model: type[BaseSettings], field: str, *flags: str) -> Any:
    """The typer option of `model.field`: its help, and its environment variable."""
    info = model.model_fields[field]
    flag = flags[0] if flags else "--" + field.replace("_", "-")
    envvar = ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
    return typer.Option(*flags, help=info.description, envvar=envvar, show_envvar=True)


def default(model: type[BaseSettings], field: str) -> Any:
    return model.model_fields[field].default


def validated(model: type[S], **values: Any) -> S:
    """`model` of the parsed options (the parser read the environment for those on
    the command line; the model reads it for the others, such as
    DAOLINET_KEY_SWITCH_DELAY)."""
    try:
        return model(**values)
    except ValidationError as exc:
        msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise CliError(msg) from None


@app.command()
def agent(
    controller: Annotated[str, option(AgentConfig, "controller")],
    host: Annotated[str, option(AgentConfig, "host", "--host")],
    ovsdb: Annotated[str, option(AgentConfig, "ovsdb")],
    token_file: Annotated[
        Path | None, option(AgentConfig, "token_file", "--token-file")
    ] = None,
    bridge: Annotated[str, option(AgentConfig, "bridge")] = default(AgentConfig, "bridge"),
    address: Annotated[str | None, option(AgentConfig, "address")] = None,
    socket: Annotated[Path, option(AgentConfig, "socket", "--socket")] = Path(DEFAULT_SOCKET),
    site: Annotated[str, option(AgentConfig, "site")] = default(AgentConfig, "site"),
    datapath_type: Annotated[
        DatapathType, option(AgentConfig, "datapath_type", "--datapath-type")
    ] = DatapathType.auto,
    connect_timeout: Annotated[
        float, option(AgentConfig, "connect_timeout", "--connect-timeout")
    ] = default(AgentConfig, "connect_timeout"),
    plugin_socket: Annotated[
        str, option(AgentConfig, "plugin_socket", "--plugin-socket")
    ] = default(AgentConfig, "plugin_socket"),
    docker_host: Annotated[
        str, option(AgentConfig, "docker_host", "--docker-host")
    ] = default(AgentConfig, "docker_host"),
    state_dir: Annotated[Path, option(AgentConfig, "state_dir", "--state-dir")] = Path(
        DEFAULT_STATE_DIR),
    wireguard: Annotated[Path | None, option(AgentConfig, "wireguard", "--wireguard")] = None,
    docker_forwarding: Annotated[
        bool, option(AgentConfig, "docker_forwarding")
    ] = default(AgentConfig, "docker_forwarding"),
    tls_ca: Annotated[Path | None, option(AgentConfig, "tls_ca", "--tls-ca")] = None,
    tls_cert: Annotated[Path | None, option(AgentConfig, "tls_cert", "--tls-cert")] = None,
    tls_key: Annotated[Path | None, option(AgentConfig, "tls_key", "--tls-key")] = None,
    metrics_address: Annotated[
        str, option(AgentConfig, "metrics_address", "--metrics-address")
    ] = default(AgentConfig, "metrics_address"),
    metrics_port: Annotated[
        int, option(AgentConfig, "metrics_port", "--metrics-port")
    ] = default(AgentConfig, "metrics_port"),
    log_level: Annotated[str, option(AgentConfig, "log_level", "--log-level")] = default(
        AgentConfig, "log_level"),
) -> None:
    """Run the host agent (until SIGTERM/SIGINT)."""
    cfg = validated(
        AgentConfig, controller=controller, token_file=token_file, host=host, ovsdb=ovsdb,
        bridge=bridge, address=address, socket=socket, site=site,
        datapath_type=datapath_type.value, connect_timeout=connect_timeout,
        plugin_socket=plugin_socket, docker_host=docker_host, state_dir=state_dir,
        wireguard=wireguard, docker_forwarding=docker_forwarding,
        tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, metrics_address=metrics_address,
        metrics_port=metrics_port, log_level=log_level,
    )
    configure_logging(cfg.log_level)
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
    netns: Annotated[str, option(AttachOptions, "netns")],
    network: Annotated[str, option(AttachOptions, "network")],
    ip: Annotated[str | None, option(AttachOptions, "ip")] = None,
    mac: Annotated[str | None, option(AttachOptions, "mac")] = None,
    name: Annotated[str | None, option(AttachOptions, "name")] = None,
    socket: Annotated[Path, option(AttachOptions, "socket", "--socket")] = Path(DEFAULT_SOCKET),
    as_json: Annotated[bool, option(AttachOptions, "as_json", "--json")] = False,
) -> None:
    """Attach a network namespace to a daolinet network."""
    opts = validated(AttachOptions, netns=netns, network=network, ip=ip, mac=mac, name=name,
                     socket=socket, as_json=as_json)
    payload: dict[str, Any] = {"netns": opts.netns, "network": opts.network}
    for key, value in (("ip", opts.ip), ("mac", opts.mac), ("name", opts.name)):
        if value is not None:
            payload[key] = value
    ep = _call_agent(opts.socket, "/v1/attach", payload)
    if opts.as_json:
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
    name: Annotated[str | None, option(DetachOptions, "name", "--name")] = None,
    socket: Annotated[Path, option(DetachOptions, "socket", "--socket")] = Path(DEFAULT_SOCKET),
) -> None:
    """Detach a container from daolinet."""
    opts = validated(DetachOptions, name=name, socket=socket)
    if container and opts.name and container != opts.name:
        raise CliError("give the container name once (NAME or --name)")
    target = container or opts.name
    if not target:
        raise CliError("missing container name (NAME or --name)")
    body = _call_agent(opts.socket, "/v1/detach", {"name": target})
    typer.echo(f"detached {body.get('detached', target)}")


@app.command("wg-up")
def wg_up(config: Annotated[Path, option(WgUpOptions, "config", "--config")]) -> None:
    """Create or update this host's WireGuard interface and mesh peers (idempotent).

    Generates the private key on first use (mode 0600; it never leaves the host) and
    prints the public key with the interface facts as JSON.  Peers are the hosts of
    other sites in the file's `hosts`; per-connection allowed-ips an agent holds are
    kept, so it can run again at any time (a host added later) without a restart.
    """
    from hostnet.host.wireguard import WgConfig, WireGuardError, to_json
    from hostnet.host.wireguard import wg_up as provision

    opts = validated(WgUpOptions, config=config)
    try:
        typer.echo(to_json(provision(WgConfig.load(opts.config))))
    except WireGuardError as exc:
        raise CliError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors are one line on stderr)."""
    return run_app(app, PROG, argv, known=(CliError,))


def run() -> None:
    sys.exit(main())
