"""`daolinet-controller`: os-ken OpenFlow app, policy API and agent hub in one process.

Only wiring: the options are controller/settings.py's model; every part gets its
collaborators in its constructor, in an order without cycles (the desired index
before the runtime that reads it and the inventory that fills it; the roles
before the runtime and the OpenFlow app that follow them; the switches' registry
before the runtime that writes to it and the app that fills it).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from fastapi import FastAPI

from controller.agents.hub import AgentHub
from controller.api import metrics, readiness
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.limits import BodyLimits
from controller.api.routes import exports as exports_api
from controller.api.routes import live, stream
from controller.api.routes import liveness as liveness_api
from controller.api.tlsscope import TlsH11Protocol, TlsWebSocketsProtocol
from controller.cliutil import run_app
from controller.cluster.exports import Exporter
from controller.cluster.leases import (
    REPLICAS,
    Lease,
    replica_record,
    replica_targets,
    standalone_targets,
)
from controller.cluster.masters import ASSIGNMENT, REACH, Masters, end_membership
from controller.cluster.roles import Roles
from controller.connlog.log import ConnectionLog
from controller.connlog.writer import JsonLinesWriter
from controller.datapath.runtime import DatapathRuntime, ExportLink
from controller.datapath.state import CoreState
from controller.desired.index import DesiredIndex
from controller.desired.inventory import Inventory
from controller.livemap.routes import LiveMap
from controller.logs import configure_logging, quiet_access_log
from controller.openflow.admission import Admission
from controller.openflow.app import OpenFlowDeps, start_openflow
from controller.openflow.listener import server_context
from controller.openflow.switches import Switches
from controller.settings import ENV_PREFIX, ControllerSettings, load_settings, read_tokens
from controller.store.base import StoreError
from controller.store.etcd.client import EtcdTLS
from controller.store.url import open_store
from controller.trust.revocation import REVOKED, Revocations
from controller.trust.tls import (
    ClientContext,
    ServerContext,
    TlsFiles,
    build_client_context,
    shared_ca,
)

log = logging.getLogger("daolinet.controller")

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
FIELDS = ControllerSettings.model_fields
DEFAULTS: dict[str, Any] = {name: field.default for name, field in FIELDS.items()}


def option(name: str) -> Any:
    """The command-line option of a settings field: its help, its bounds and its
    environment variable (shown in --help)."""
    field = FIELDS[name]
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if hasattr(rule, "ge"):
            bounds["min"] = rule.ge
        if hasattr(rule, "le"):
            bounds["max"] = rule.le
    return typer.Option(help=field.description, envvar=ENV_PREFIX + name.upper(),
                        show_envvar=True, **bounds)


@cli.command()
def main(
    store: Annotated[str, option("store")] = DEFAULTS["store"],
    replica: Annotated[str | None, option("replica")] = DEFAULTS["replica"],
    advertise: Annotated[str | None, option("advertise")] = DEFAULTS["advertise"],
    advertise_openflow: Annotated[
        str | None, option("advertise_openflow")
    ] = DEFAULTS["advertise_openflow"],
    site: Annotated[str | None, option("site")] = DEFAULTS["site"],
    advertise_openflow_remote: Annotated[
        str | None, option("advertise_openflow_remote")
    ] = DEFAULTS["advertise_openflow_remote"],
    lease_ttl: Annotated[float, option("lease_ttl")] = DEFAULTS["lease_ttl"],
    member_hold_down: Annotated[
        float, option("member_hold_down")
    ] = DEFAULTS["member_hold_down"],
    token_file: Annotated[Path, option("token_file")] = DEFAULTS["token_file"],
    readonly_token_file: Annotated[
        Path | None, option("readonly_token_file")
    ] = DEFAULTS["readonly_token_file"],
    agent_token_file: Annotated[
        Path | None, option("agent_token_file")
    ] = DEFAULTS["agent_token_file"],
    api: Annotated[str, option("api")] = DEFAULTS["api"],
    openflow: Annotated[str, option("openflow")] = DEFAULTS["openflow"],
    idle_timeout: Annotated[int, option("idle_timeout")] = DEFAULTS["idle_timeout"],
    packet_in_rate: Annotated[int, option("packet_in_rate")] = DEFAULTS["packet_in_rate"],
    packet_in_burst: Annotated[int, option("packet_in_burst")] = DEFAULTS["packet_in_burst"],
    switch_packet_in_rate: Annotated[
        int, option("switch_packet_in_rate")
    ] = DEFAULTS["switch_packet_in_rate"],
    switch_packet_in_burst: Annotated[
        int, option("switch_packet_in_burst")
    ] = DEFAULTS["switch_packet_in_burst"],
    deny_hold: Annotated[int, option("deny_hold")] = DEFAULTS["deny_hold"],
    api_max_body: Annotated[int, option("api_max_body")] = DEFAULTS["api_max_body"],
    api_max_bulk_body: Annotated[
        int, option("api_max_bulk_body")
    ] = DEFAULTS["api_max_bulk_body"],
    log_level: Annotated[str, option("log_level")] = DEFAULTS["log_level"],
    connection_log_entries: Annotated[
        int, option("connection_log_entries")
    ] = DEFAULTS["connection_log_entries"],
    connection_log_age: Annotated[
        float, option("connection_log_age")
    ] = DEFAULTS["connection_log_age"],
    connection_log_interval: Annotated[
        float, option("connection_log_interval")
    ] = DEFAULTS["connection_log_interval"],
    connection_log_file: Annotated[
        Path | None, option("connection_log_file")
    ] = DEFAULTS["connection_log_file"],
    metrics_hosts: Annotated[int, option("metrics_hosts")] = DEFAULTS["metrics_hosts"],
    ready_wait: Annotated[float, option("ready_wait")] = DEFAULTS["ready_wait"],
    tls_ca: Annotated[Path | None, option("tls_ca")] = DEFAULTS["tls_ca"],
    tls_cert: Annotated[Path | None, option("tls_cert")] = DEFAULTS["tls_cert"],
    tls_key: Annotated[Path | None, option("tls_key")] = DEFAULTS["tls_key"],
    insecure_plaintext: Annotated[
        bool, option("insecure_plaintext")
    ] = DEFAULTS["insecure_plaintext"],
    etcd_tls_ca: Annotated[Path | None, option("etcd_tls_ca")] = DEFAULTS["etcd_tls_ca"],
    etcd_tls_cert: Annotated[
        Path | None, option("etcd_tls_cert")
    ] = DEFAULTS["etcd_tls_cert"],
    etcd_tls_key: Annotated[Path | None, option("etcd_tls_key")] = DEFAULTS["etcd_tls_key"],
) -> None:
    """Run the daolinet controller."""
    options = dict(locals())
    try:
        configure_logging(log_level)
        settings = load_settings(options)
    except ValueError as exc:
        fail(exc)
    serve(settings)


def fail(exc: Exception) -> NoReturn:
    typer.echo(f"daolinet-controller: {exc}", err=True)
    raise typer.Exit(1) from None


def serve(settings: ControllerSettings) -> None:
    """Wire the parts and run until the API server stops."""
    try:
        token, readonly_token, agent_token = read_tokens(settings)
        etcd_tls = etcd_tls_of(settings)
        openflow_tls = None
        api_tls: ServerContext | None = None
        replica_tls: ClientContext | None = None
        if settings.tls_ca and settings.tls_cert and settings.tls_key:
            files = TlsFiles(settings.tls_ca, settings.tls_cert, settings.tls_key)
            # Refuse to start with files that do not load.
            server_context(settings.tls_ca, settings.tls_cert, settings.tls_key)
            # The API's (HTTPS, client certificates optional and verified) and this
            # replica's as a client of the others' APIs: both pick up renewed files.
            api_tls = ServerContext(files)
            replica_tls = ClientContext(settings.tls_ca, files)
            # A context per switch connection, from the files as they are then: a
            # renewed certificate is used without a restart (connections are rare).
            openflow_tls = partial(
                server_context, settings.tls_ca, settings.tls_cert, settings.tls_key
            )
        backend = open_store(settings.store, etcd_tls)
        revocations = Revocations(backend) if settings.tls else None
    except (ValueError, OSError, StoreError) as exc:
        fail(exc)
    replicated = settings.replicated
    name = settings.replica or socket.gethostname()
    record = replica_record(name, settings.api_url, settings.openflow_target,
                            site=settings.site,
                            openflow_remote=settings.advertise_openflow_remote)
    index = DesiredIndex()
    masters: Masters | None = None
    exports: Callable[[DatapathRuntime], ExportLink] | None = None
    if replicated:
        # Masters spread over the replicas (controller/cluster/masters.py): the leader
        # only assigns the switches; every member masters its share.
        leadership = Lease(backend, record, ttl=settings.lease_ttl, token=token,
                           on_leader_died=partial(end_membership, backend), tls=replica_tls)
        masters = Masters(backend, record, leadership, ttl=settings.lease_ttl, token=token,
                          switches=lambda: {h.dpid for h in index.hosts()}, tls=replica_tls,
                          hold_down=settings.member_hold_down)
        roles = masters.roles
        exports = partial(Exporter, token=token, tls=replica_tls)
        watchers = {ASSIGNMENT: masters.apply, REACH: masters.apply_reach}
        if revocations is not None:  # another replica's revocations, within the watch's delay
            watchers[REVOKED] = revocations.apply
    else:
        roles = Roles()
        leadership = Lease(backend, record, ttl=settings.lease_ttl, standalone=True,
                           on_elected=roles.set_master,
                           on_deposed=lambda: roles.set_master(None))
        watchers = {}
    switches = Switches(roles)
    admission = Admission(
        lambda name: (host.dpid if (host := index.host(name)) is not None else None),
        tls=settings.tls,
        revoked=lambda identity: (
            revocations is not None and revocations.refused(identity) is not None
        ),
    )
    connlog, connlog_writer = connection_log(settings, name)
    runtime = DatapathRuntime(
        index,
        roles,
        state=CoreState(
            idle_timeout=settings.idle_timeout,
            deny_hold=settings.deny_hold,
            packet_in_rate=settings.packet_in_rate,
            packet_in_burst=settings.packet_in_burst,
            switch_packet_in_rate=settings.switch_packet_in_rate,
            switch_packet_in_burst=settings.switch_packet_in_burst,
        ),
        switches=switches,
        agents=partial(AgentHub, token=token, tls=replica_tls),
        exports=exports,
        connlog=connlog,
    )
    hub = runtime.agents
    assert isinstance(hub, AgentHub)  # made by the factory above
    try:
        inventory = Inventory(backend, runtime.on_change, replicated=replicated, index=index,
                              watchers=watchers)
        if replicated:
            with backend.exclusive():
                backend.put(REPLICAS, name, record)
    except StoreError as exc:
        fail(exc)
    api_host, api_port = settings.api_address
    of_host, of_port = settings.openflow_address
    ctx = ApiContext(
        inventory=inventory,
        token=token,
        runtime=runtime,
        openflow_host=of_host,
        openflow_port=of_port,
        openflow_scheme=settings.openflow_scheme,
        switch_refusals=admission.refusals,
        readonly_token=readonly_token,
        agent_token=agent_token,
        openflow_targets=(
            (lambda host_site: replica_targets(backend, host_site)) if replicated
            else standalone_targets(settings.site, settings.advertise_openflow_remote)
        ),
        replica=record,
        roles=roles,
        hub=hub,
        leadership=leadership,
        masters=masters,
        tls=settings.tls,
        revocations=revocations,
        client_tls=replica_tls,
        connlog=connlog,
        metrics_hosts=settings.metrics_hosts,
        ready_wait=settings.ready_wait,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        start_openflow(OpenFlowDeps(runtime=runtime, roles=roles, switches=switches,
                                    admission=admission),
                       of_host, of_port, openflow_tls)
        leadership.start()
        if masters is not None:
            masters.start()
        log.info("replica %s: API on %s:%d, OpenFlow on %s:%d, store %s", name, api_host,
                 api_port, of_host, of_port, backend)
        if connlog_writer is not None:
            connlog_writer.start()
        yield
        if connlog_writer is not None:
            connlog_writer.stop()  # what is left, open flood summaries too
        if masters is not None:
            masters.stop()  # our switches go to the other members at once
        leadership.stop()  # a leader resigns: another replica takes over at once

    livemap = LiveMap()
    app = create_app(
        ctx, extra_routers=[live.router, stream.router, liveness_api.router, exports_api.router,
                            livemap.api_router],
        lifespan=lifespan,
        body_limits=BodyLimits.of(settings.api_max_body, settings.api_max_bulk_body),
    )
    app.include_router(metrics.router)
    app.include_router(readiness.router)
    app.include_router(livemap.page_router)
    config = api_config(app, api_host, api_port, settings.log_level, api_tls)
    quiet_access_log()  # after uvicorn configured its loggers (controller/logs.py)
    server = uvicorn.Server(config)
    server.run()
    backend.close()
    # os-ken's threads do not stop on request; the process is done once the API is.
    sys.stdout.flush()
    os._exit(0 if server.started else 1)


# How long a stopping replica waits for its connections before it hands its switches
# over (the lifespan's end, `masters.stop`): requests in flight get this long.  Without
# a bound, every idle HTTPS or WSS connection held the stop for 30 s - asyncio's wait
# for the peer's TLS close_notify, which our clients do not send - and its switches'
# hosts had no stream meanwhile (Molecule rolling.yml: a 30.3 s gap).
GRACEFUL_SHUTDOWN = 1  # seconds (uvicorn takes whole seconds)


def api_config(app: FastAPI, host: str, port: int, log_level: str,
               tls: ServerContext | None) -> uvicorn.Config:
    """The API server's configuration: HTTPS with `tls` (a client certificate optional
    and verified against the CA; the protocols pass it to the routes:
    controller/api/tlsscope.py), plain HTTP without."""
    if tls is None:
        return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                              ws="websockets-sansio",
                              timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
    context = tls.context
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        http=TlsH11Protocol, ws=TlsWebSocketsProtocol,
        ssl_context_factory=lambda _config, _default: context,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


def connection_log(
    settings: ControllerSettings, replica: str
) -> tuple[ConnectionLog | None, JsonLinesWriter | None]:
    """The connection log and its file writer, as the options ask (none at 0 entries)."""
    if settings.connection_log_entries == 0:
        return None, None
    path = settings.connection_log_file
    connlog = ConnectionLog(settings.connection_log_entries, settings.connection_log_age,
                            settings.connection_log_interval, writing=path is not None)
    writer = JsonLinesWriter(connlog, path, replica) if path is not None else None
    return connlog, writer


def etcd_tls_of(settings: ControllerSettings) -> EtcdTLS | None:
    """The etcd client's files (None: plain http), checked before anything starts:
    they load, and the etcd CA is not the deployment's (--tls-ca), which signs every
    host's certificate (docs/security.md, "etcd").  ValueError naming the option."""
    ca, cert, key = settings.etcd_tls_ca, settings.etcd_tls_cert, settings.etcd_tls_key
    if ca is None or cert is None or key is None:
        return None
    build_client_context(ca, TlsFiles(ca, cert, key))
    if settings.tls_ca is not None and shared_ca(ca, settings.tls_ca):
        raise ValueError(
            f"--etcd-tls-ca {ca} holds the deployment's CA (--tls-ca {settings.tls_ca}): "
            "etcd must trust a CA of its own, or every host's certificate reaches the store"
        )
    return EtcdTLS(ca, cert, key)


def run() -> None:
    sys.exit(run_app(cli, "daolinet-controller"))
