"""`daolinet-controller`: os-ken OpenFlow app, policy API and agent hub in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from controller.agents.hub import AgentHub
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.routes import exports as exports_api
from controller.api.routes import live, metrics, stream
from controller.api.routes import liveness as liveness_api
from controller.cliutil import run_app
from controller.cluster.exports import Exporter
from controller.cluster.leases import (
    REPLICAS,
    Replica,
    openflow_targets,
    parse_openflow_target,
    replica_record,
)
from controller.cluster.masters import ASSIGNMENT, REACH, Masters
from controller.datapath.runtime import DatapathRuntime
from controller.datapath.state import CoreState
from controller.desired.inventory import Inventory
from controller.desired.models import Name
from controller.store.base import Store, StoreError
from controller.store.url import DEFAULT_STORE_URL, open_store

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


def advertised(value: str | None, host: str, port: int, scheme: str) -> str | None:
    """The URL/target others reach this replica at: `value`, else HOST:PORT unless
    HOST is a wildcard (then nobody can know it: None)."""
    if value:
        return value
    if host in ("", "0.0.0.0", "::"):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6, in a URL as in an OVS target
    return f"{scheme}{host}:{port}"


def replica_targets(store: Store, site: str) -> list[str]:
    """The OpenFlow targets of every replica for a switch of `site`: each switch
    connects to all of them (controller/cluster/leases.py, `target_for`)."""
    return openflow_targets(store.list(REPLICAS), site)


def check_target(option: str, value: str | None) -> str | None:
    """An --advertise-openflow* value: None when not given, else tcp:IP:PORT."""
    if not value:
        return None
    try:
        return parse_openflow_target(value)
    except ValueError as exc:
        raise ValueError(f"{option} {exc}") from None


def check_site(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return TypeAdapter(Name).validate_python(value)
    except ValidationError:
        raise ValueError(
            f"--site {value!r} is not a site name (1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit)"
        ) from None


def standalone_targets(
    site: str | None, remote: str | None
) -> Callable[[str], list[str]] | None:
    """The one controller (SQLite): a switch of another site than its own gets
    --advertise-openflow-remote when it was given; every other switch the target
    derived from the address its agent reached the API at (controller/api/routes/hosts.py)."""
    if site is None or remote is None:
        return None
    return lambda host_site: [] if host_site == site else [remote]


def start_openflow(runtime: DatapathRuntime, host: str, port: int) -> None:
    """Launch os-ken in-process (os-ken 4 has no osken-manager), on its own thread."""
    # app_manager must be imported before os_ken.controller.controller (import cycle);
    # importing the latter registers the --ofp-* options.
    from os_ken.base.app_manager import AppManager  # isort: skip
    from os_ken import cfg  # isort: skip
    from os_ken.controller import controller as _ofp_options  # noqa: F401  # isort: skip

    from controller.openflow.app import DaolinetApp

    cfg.CONF(
        args=["--ofp-listen-host", host, "--ofp-tcp-listen-port", str(port)],
        project="os_ken",
    )
    DaolinetApp.runtime = runtime
    thread = threading.Thread(
        target=AppManager.run_apps, args=(["controller.openflow.app"],), name="os-ken", daemon=True
    )
    thread.start()


@cli.command()
def main(
    store: Annotated[
        str,
        typer.Option(
            help="sqlite:///PATH (one controller) or etcd://HOST:PORT,HOST:PORT.../PREFIX "
            "(replicated controllers; the prefix is optional, default daolinet)"
        ),
    ] = DEFAULT_STORE_URL,
    replica: Annotated[
        str | None, typer.Option(help="name of this controller replica (default: hostname)")
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(help="API URL agents and other replicas reach this replica at "
                     "(default: http://API_HOST:PORT; needed with etcd and a wildcard --api)"),
    ] = None,
    advertise_openflow: Annotated[
        str | None,
        typer.Option(help="OpenFlow target switches reach this replica at, tcp:IP:PORT "
                     "(default: from --openflow; needed with etcd and a wildcard --openflow)"),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(help="site of this replica (hosts' --site): its switches use "
                     "--advertise-openflow, those of other sites --advertise-openflow-remote "
                     "(default: none, every switch uses --advertise-openflow)"),
    ] = None,
    advertise_openflow_remote: Annotated[
        str | None,
        typer.Option(help="OpenFlow target switches of other sites reach this replica at, "
                     "tcp:IP:PORT, e.g. its WireGuard address (default: --advertise-openflow; "
                     "needs --site)"),
    ] = None,
    lease_ttl: Annotated[
        float,
        typer.Option(min=1.0, max=60.0,
                     help="seconds a silent replica keeps its membership and leadership "
                     "(etcd lease TTL)"),
    ] = 2.0,
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
        int, typer.Option(min=1, max=3600,
                          help="seconds a denied pair stays dropped after its last packet")
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
        own_site = check_site(site)
        remote_target = check_target("--advertise-openflow-remote", advertise_openflow_remote)
        if remote_target and own_site is None:
            raise ValueError(
                "--advertise-openflow-remote needs --site: the switches of the other sites "
                "use it, those of this replica's site --advertise-openflow"
            )
        api_url = advertised(advertise, api_host, api_port, "http://")
        of_target = advertised(
            check_target("--advertise-openflow", advertise_openflow), of_host, of_port, "tcp:"
        )
        token = read_or_create_token(token_file)
        readonly_token = read_role_token(readonly_token_file, "read-only", token)
        agent_token = read_role_token(agent_token_file, "agent", token)
        if readonly_token and readonly_token == agent_token:
            raise ValueError("the read-only and the agent token files hold the same token")
        replicated = store.startswith("etcd:")
        name = replica or socket.gethostname()
        if replicated and (api_url is None or of_target is None):
            raise ValueError(
                "with an etcd store, replicas must be reachable by each other and by the "
                "switches: give --advertise URL and --advertise-openflow tcp:IP:PORT "
                "(or listen on a specific address)"
            )
        backend = open_store(store)
    except (ValueError, OSError, StoreError) as exc:
        typer.echo(f"daolinet-controller: {exc}", err=True)
        raise typer.Exit(1) from None

    record = replica_record(name, api_url, of_target, site=own_site,
                            openflow_remote=remote_target)
    runtime_ref: list[DatapathRuntime] = []
    try:
        inventory = Inventory(
            backend, lambda change: runtime_ref[0].on_change(change), replicated=replicated
        )
        if replicated:
            with backend.exclusive():
                backend.put(REPLICAS, name, record)
    except StoreError as exc:
        typer.echo(f"daolinet-controller: {exc}", err=True)
        raise typer.Exit(1) from None
    runtime = DatapathRuntime(
        inventory.index,
        CoreState(
            idle_timeout=idle_timeout,
            deny_hold=deny_hold,
            packet_in_rate=packet_in_rate,
            packet_in_burst=packet_in_burst,
        ),
    )
    runtime_ref.append(runtime)
    if replicated:
        # Masters spread over the replicas (controller/cluster/masters.py): the leader only
        # assigns the switches; every member masters its share.
        elector = Replica(backend, record, ttl=lease_ttl, token=token)
        spread = Masters(
            backend, record, elector, ttl=lease_ttl, token=token,
            switches=lambda: {h.dpid for h in inventory.index.hosts()},
            on_assignment=runtime.set_assignment, on_membership=runtime.set_membership,
            connected=runtime.connected_now,
        )
        masters: Masters | None = spread
        runtime.me = name
        runtime.member_api = spread.member_api
        runtime.lease_valid = lambda: spread.is_member
        inventory.watchers[ASSIGNMENT] = spread.apply
        inventory.watchers[REACH] = spread.apply_reach
        Exporter(runtime, token)
    else:
        masters = None
        elector = Replica(
            backend, record, ttl=lease_ttl,
            on_elected=runtime.set_master, on_deposed=lambda: runtime.set_master(None),
            standalone=True,
        )
        runtime.generation_hint = lambda: elector.generation
        runtime.lease_valid = lambda: elector.is_leader
    ctx = ApiContext(
        inventory=inventory,
        token=token,
        runtime=runtime,
        openflow_host=of_host,
        openflow_port=of_port,
        readonly_token=readonly_token,
        agent_token=agent_token,
        openflow_targets=(
            (lambda host_site: replica_targets(backend, host_site)) if replicated
            else standalone_targets(own_site, remote_target)
        ),
        replica=record,
    )
    app = create_app(
        ctx, extra_routers=[live.router, stream.router, liveness_api.router, exports_api.router]
    )
    app.include_router(metrics.router)

    def leader_url() -> str | None:
        leader = elector.leader()
        return str(leader["api"]) if leader and leader.get("api") else None

    app.state.leader = leader_url
    app.state.replica = elector
    if masters is not None:
        app.state.masters = masters
        app.state.peer_apis = masters.peer_apis

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hub = app.state.hub = AgentHub(runtime, asyncio.get_running_loop())
        hub.replica_token = token
        start_openflow(runtime, of_host, of_port)
        elector.start()
        if masters is not None:
            masters.start()
        log.info("replica %s: API on %s:%d, OpenFlow on %s:%d, store %s", name, api_host,
                 api_port, of_host, of_port, backend)
        yield
        if masters is not None:
            masters.stop()  # our switches go to the other members at once
        elector.stop()  # a leader resigns: another replica takes over at once

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
