"""`daolinet-controller`: os-ken OpenFlow app, policy API and agent hub in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI

from controller.api import metrics, routes, stream
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.cliutil import run_app
from controller.core import CoreState
from controller.fabric import Fabric
from controller.hub import AgentHub
from controller.inventory import Inventory
from controller.store import DEFAULT_STORE_URL, open_store

log = logging.getLogger("daolinet.controller")
DEFAULT_TOKEN_FILE = "/etc/daolinet/controller.token"

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    """"HOST:PORT", "HOST" or ":PORT" -> (host, port); raises ValueError with the value."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def read_or_create_token(path: Path) -> str:
    """The API token; a new random one is written (mode 0600) when the file is absent."""
    if path.exists():
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.warning("wrote a new API token to %s", path)
    return token


def read_role_token(path: Path | None, role: str, admin: str) -> str:
    """The token of an optional role (agent, read-only); "" when no file is given.

    Unlike the admin token it is never created: it is given to someone, so it must
    exist, be non-empty and differ from the admin token.
    """
    if path is None:
        return ""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{role} token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ValueError(f"{role} token file {path} is empty")
    if token == admin:
        raise ValueError(f"{role} token file {path} holds the admin token")
    return token


def start_openflow(fabric: Fabric, host: str, port: int) -> None:
    """Launch os-ken in-process (os-ken 4 has no osken-manager), on its own thread."""
    # app_manager must be imported before os_ken.controller.controller (import cycle);
    # importing the latter registers the --ofp-* options.
    from os_ken.base.app_manager import AppManager  # isort: skip
    from os_ken import cfg  # isort: skip
    from os_ken.controller import controller as _ofp_options  # noqa: F401  # isort: skip

    from controller.ofapp import DaolinetApp

    cfg.CONF(
        args=["--ofp-listen-host", host, "--ofp-tcp-listen-port", str(port)],
        project="os_ken",
    )
    DaolinetApp.fabric = fabric
    thread = threading.Thread(
        target=AppManager.run_apps, args=(["controller.ofapp"],), name="os-ken", daemon=True
    )
    thread.start()


@cli.command()
def main(
    store: Annotated[str, typer.Option(help="sqlite:///PATH of the desired-state store")] = (
        DEFAULT_STORE_URL
    ),
    token_file: Annotated[
        Path, typer.Option(help="API token file (created with a random token if absent)")
    ] = Path(DEFAULT_TOKEN_FILE),
    readonly_token_file: Annotated[
        Path | None, typer.Option(help="Token file of a read-only API token (optional)")
    ] = None,
    agent_token_file: Annotated[
        Path | None,
        typer.Option(help="Token file of the host agents' API token (optional; not policy)"),
    ] = None,
    api: Annotated[str, typer.Option(help="HOST:PORT of the REST API")] = "0.0.0.0:8080",
    openflow: Annotated[str, typer.Option(help="HOST:PORT of the OpenFlow listener")] = (
        "0.0.0.0:6653"
    ),
    idle_timeout: Annotated[
        int, typer.Option(min=1, max=65535, help="seconds before an idle route expires")
    ] = 10,
    packet_in_rate: Annotated[
        int,
        typer.Option(min=1, max=1_000_000, help="PacketIns per second a container may cause"),
    ] = 200,
    packet_in_burst: Annotated[
        int, typer.Option(min=1, max=100_000, help="PacketIns a container may cause at once")
    ] = 8,
    deny_hold: Annotated[
        int, typer.Option(min=1, max=3600, help="seconds a denied pair is dropped in the switch")
    ] = 3,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the daolinet controller."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        api_host, api_port = split_hostport(api, 8080)
        of_host, of_port = split_hostport(openflow, 6653)
        token = read_or_create_token(token_file)
        readonly_token = read_role_token(readonly_token_file, "read-only", token)
        agent_token = read_role_token(agent_token_file, "agent", token)
        if readonly_token and readonly_token == agent_token:
            raise ValueError("the read-only and the agent token files hold the same token")
        backend = open_store(store)
    except (ValueError, OSError) as exc:
        typer.echo(f"daolinet-controller: {exc}", err=True)
        raise typer.Exit(1) from None

    fabric_ref: list[Fabric] = []
    inventory = Inventory(backend, lambda change: fabric_ref[0].on_change(change))
    fabric = Fabric(
        inventory.index,
        CoreState(
            idle_timeout=idle_timeout,
            deny_hold=deny_hold,
            packet_in_rate=packet_in_rate,
            packet_in_burst=packet_in_burst,
        ),
    )
    fabric_ref.append(fabric)
    ctx = ApiContext(
        inventory=inventory,
        token=token,
        fabric=fabric,
        openflow_host=of_host,
        openflow_port=of_port,
        readonly_token=readonly_token,
        agent_token=agent_token,
    )
    app = create_app(ctx, extra_routers=[routes.router, stream.router])
    app.include_router(metrics.router)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        app.state.hub = AgentHub(fabric, asyncio.get_running_loop())
        start_openflow(fabric, of_host, of_port)
        log.info("API on %s:%d, OpenFlow on %s:%d", api_host, api_port, of_host, of_port)
        yield

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app, host=api_host, port=api_port, log_level=log_level, ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    server.run()
    backend.close()
    # os-ken's threads do not stop on request; the process is done once the API is.
    sys.stdout.flush()
    os._exit(0 if server.started else 1)


def run() -> None:
    sys.exit(run_app(cli, "daolinet-controller"))
