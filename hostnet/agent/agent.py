"""The host agent: puts the parts together and runs them until SIGTERM/SIGINT.

Startup: bridge, WireGuard (tunnel.py), registration (registration.py), orphan
ports; then the local API (localapi.py), the Docker plugin (dockerplugin.py) and the
route stream from the controller (stream.py).  Blocking work (pyroute2,
ovs-vsctl) runs in two single-thread executors: one owns the `KernelRouteTable`
(first-packet path, never queued behind an attach) and one does everything else on
the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller.desired.models import NAMES_RESPONDER
from controller.trust.tls import ClientContext, TlsFiles
from hostnet.agent.client import ControllerClient, ControllerError, controller_urls, stream_url
from hostnet.agent.commands import Commands
from hostnet.agent.config import AgentConfig, AgentStartupError, read_token
from hostnet.agent.dockerplugin import PluginService
from hostnet.agent.localapi import create_app
from hostnet.agent.metrics.instruments import AgentMetrics
from hostnet.agent.metrics.server import MetricsServer
from hostnet.agent.names import NamesTable, Resolver, Responder, host_upstreams
from hostnet.agent.registration import Registrar
from hostnet.agent.servers import UnixServer, bind_unix_socket, systemd_socket
from hostnet.agent.stream import StateApplier, Stream
from hostnet.agent.tunnel import Tunnel
from hostnet.docker.common import SystemDockerPortOps
from hostnet.docker.engine import DockerClient
from hostnet.docker.plugin import DockerPlugin
from hostnet.host import netlink
from hostnet.host.attach import Attacher, SystemHostOps
from hostnet.host.forwarding import DockerForwarding, ForwardingError
from hostnet.host.nat import NatTable
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import Ovs, OvsError, detect_datapath_type
from hostnet.host.ports import unplug
from hostnet.host.routes import KernelRouteTable
from hostnet.host.wireguard import WireGuardError
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)

FORWARDING_EVERY = 5.0  # seconds between checks of Docker's DOCKER-USER chain
TUNNEL_CHECK_EVERY = 1.0  # seconds between checks of the WireGuard interface


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.ovs = Ovs(cfg.ovsdb)
        self.datapath_type = (
            detect_datapath_type() if cfg.datapath_type == "auto" else cfg.datapath_type
        )
        self._route_exec = ThreadPoolExecutor(1, thread_name_prefix="routes")
        self._host_exec = ThreadPoolExecutor(1, thread_name_prefix="host")
        self.table = KernelRouteTable(cfg.bridge)
        self.tunnel = Tunnel(
            cfg.host, cfg.wireguard, host_exec=self._host_exec, route_exec=self._route_exec,
            key_switch_delay=cfg.key_switch_delay,
        )
        self.names = NamesTable()
        self.metrics = AgentMetrics()
        self.applier = StateApplier(self.table, NatTable(), self.tunnel, self.names,
                                    self.metrics)
        self.responder: Responder | None = None
        self.host_ops = SystemHostOps(
            self.ovs, cfg.bridge, tx_offload_off=self.datapath_type == "netdev"
        )
        self._stop = asyncio.Event()
        # made at startup, once the token is read
        self.client: ControllerClient | None = None
        self.registrar: Registrar | None = None
        self.stream: Stream | None = None
        self.plugin_service: PluginService | None = None
        self._server: UnixServer | None = None
        self._metrics_server: MetricsServer | None = None
        self._plugin_sock: socket.socket | None = None
        self._plugin_sock_activated = False  # systemd's: it stays, and so does its file

    def stop(self) -> None:
        self._stop.set()
        if self.stream is not None:
            self.stream.close()  # ends the blocking stream on the route thread
        if self._server is not None:
            self._server.should_exit = True

    # -- startup ------------------------------------------------------------------

    def _prepare_bridge_interface(self) -> None:
        netlink.wait_for_link(self.cfg.bridge, timeout=10.0)
        netlink.set_link_up(self.cfg.bridge)
        netlink.set_sysctls(self.cfg.bridge)

    async def remove_orphans(self, client: ControllerClient) -> list[str]:
        """Delete OVS ports (and veths) of endpoints the controller no longer lists here."""
        try:
            endpoints = await client.list_containers(self.cfg.host)
        except ControllerError as exc:
            log.warning("orphan check skipped: %s", exc.detail)
            return []
        known = {str(e.get("id")) for e in endpoints}
        ports = await in_thread(
            self._host_exec, self.ovs.list_ports_with_endpoint, self.cfg.bridge
        )
        removed = []
        for port, endpoint in sorted(ports.items()):
            if endpoint in known:
                continue
            try:
                await in_thread(self._host_exec, unplug, self.host_ops, port)
            except (OvsError, NetlinkError) as exc:
                log.error("cannot remove orphan port %s: %s", port, exc)
                continue
            log.info("removed orphan port %s (endpoint %s)", port, endpoint)
            removed.append(port)
        return removed

    async def startup(self) -> socket.socket:
        token = read_token(self.cfg.token_file) if self.cfg.token_file is not None else None
        try:
            for url in controller_urls(self.cfg.controller):
                stream_url(url, self.cfg.host)
        except ValueError as exc:
            raise AgentStartupError(str(exc)) from exc
        tls = None
        if self.cfg.tls_ca and self.cfg.tls_cert and self.cfg.tls_key:
            # HTTPS and WSS to the controller with this host's certificate
            try:
                tls = ClientContext(self.cfg.tls_ca, TlsFiles(self.cfg.tls_ca, self.cfg.tls_cert,
                                                              self.cfg.tls_key))
            except (OSError, ValueError) as exc:
                raise AgentStartupError(f"controller TLS: {exc}") from None
        client = self.client = ControllerClient(self.cfg.controller, token, tls=tls)
        registrar = self.registrar = Registrar(
            self.cfg, client, self.ovs, self.datapath_type, self.tunnel,
            host_exec=self._host_exec,
        )
        try:
            if self.cfg.tls_ca and self.cfg.tls_cert and self.cfg.tls_key:
                # Before any ssl: target: the switch connects with this host's certificate.
                await in_thread(self._host_exec, self.ovs.set_ssl, self.cfg.tls_key,
                                self.cfg.tls_cert, self.cfg.tls_ca)
            await in_thread(
                self._host_exec, self.ovs.ensure_bridge, self.cfg.bridge, self.datapath_type
            )
            await self.tunnel.startup()
            reg = await registrar.register_with_retry()
            await in_thread(self._host_exec, self._prepare_bridge_interface)
        except (OvsError, NetlinkError) as exc:
            raise AgentStartupError(str(exc)) from exc
        log.info(
            "registered %s address=%s dpid=%016x targets=%s datapath=%s",
            self.cfg.host, registrar.address, reg.dpid, ",".join(reg.openflow_targets),
            self.datapath_type,
        )
        await self.remove_orphans(client)
        sock = bind_unix_socket(self.cfg.socket)
        if self.cfg.plugin_socket:
            activated = systemd_socket(Path(self.cfg.plugin_socket))
            if activated is not None:
                self._plugin_sock, self._plugin_sock_activated = activated, True
                return sock
            try:
                self._plugin_sock = bind_unix_socket(Path(self.cfg.plugin_socket))
            except AgentStartupError:
                sock.close()
                raise
        return sock

    def _start_plugin(self, client: ControllerClient) -> DockerPlugin | None:
        if self._plugin_sock is None:
            return None
        ops = SystemDockerPortOps(
            self.ovs, self.cfg.bridge, tx_offload_off=self.datapath_type == "netdev"
        )
        docker = DockerClient(self.cfg.docker_host)
        plugin = DockerPlugin(self.cfg.host, client, docker, ops, executor=self._host_exec,
                              state_dir=self.cfg.state_dir)
        self.plugin_service = PluginService(plugin, docker, self._plugin_sock, self._stop,
                                            self.metrics)
        self.plugin_service.start()
        log.info("serving the Docker plugin on %s (Docker API %s)", self.cfg.plugin_socket,
                 self.cfg.docker_host)
        return plugin

    async def _start_responder(self) -> None:
        """The name responder on its address (docs/architecture.md, "Names across
        hosts").  Without it the rest of the agent works: containers then get no
        answer from Docker's external nameserver, which the log says."""
        address = str(NAMES_RESPONDER)
        try:
            await in_thread(self._host_exec, netlink.ensure_local_address, address)
            responder = Responder(Resolver(self.names, host_upstreams(NAMES_RESPONDER)), address)
            await responder.start()
        except (NetlinkError, OSError) as exc:
            log.error("name responder not started on %s: %s", address, exc)
            return
        self.responder = responder
        log.info("serving names on %s (upstream: %s)", address,
                 ", ".join(responder.resolver.upstreams) or "none")

    # -- main ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        sock: socket.socket | None = None
        started = False
        try:
            startup = asyncio.ensure_future(self.startup())
            stopper = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
                return
            stopper.cancel()
            sock = startup.result()
            started = True
            assert self.client is not None and self.registrar is not None
            attacher = Attacher(self.cfg.host, self.client, self.host_ops,
                                executor=self._host_exec)
            self._server = UnixServer(create_app(attacher))
            if self._stop.is_set():
                return
            server_task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
            await self._start_responder()
            self._start_metrics()
            plugin = self._start_plugin(self.client)
            self.stream = Stream(
                self.cfg.host, self.client, self.registrar, self.applier,
                Commands(self.cfg.host, self.tunnel, plugin), self._stop,
                route_exec=self._route_exec, loop=loop, metrics=self.metrics,
            )
            stream_task = asyncio.ensure_future(self.stream.run())
            forwarding_task = asyncio.ensure_future(self._keep_docker_forwarding())
            tunnel_task = asyncio.ensure_future(self._watch_tunnel())
            log.info("serving the local API on %s", self.cfg.socket)
            await self._stop.wait()
            for task in (stream_task, forwarding_task, tunnel_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._server.should_exit = True
            await server_task
        finally:
            await self._shutdown(loop, sock)
            if started:
                log.info("agent stopped")

    async def _keep_docker_forwarding(self) -> None:
        """Every FORWARDING_EVERY s: daolinet's rules at the head of DOCKER-USER
        (hostnet/host/forwarding.py), since dockerd may (re)start at any time."""
        if not self.cfg.docker_forwarding:
            return
        tunnel = self.tunnel.cfg.interface if self.tunnel.cfg is not None else None
        keeper = DockerForwarding(self.cfg.bridge, tunnel)
        failed = ""
        while not self._stop.is_set():
            try:
                added = await in_thread(self._host_exec, keeper.ensure)
                failed = ""
                if added:
                    log.info("Docker's DOCKER-USER chain: added %s (its FORWARD policy "
                             "drops routed traffic otherwise)", "; ".join(added))
            except ForwardingError as exc:
                if str(exc) != failed:  # once per distinct error
                    log.warning("cannot keep daolinet's rules in DOCKER-USER: %s", exc)
                failed = str(exc)
            await asyncio.sleep(FORWARDING_EVERY)

    async def _watch_tunnel(self) -> None:
        """Every TUNNEL_CHECK_EVERY s: this host's WireGuard interface is there and the
        one we configured (hostnet/agent/tunnel.py `check`); when it had to be made
        again, the stream is asked for the whole state (peers, allowed-ips, routes)."""
        if self.tunnel.cfg is None:
            return
        while not self._stop.is_set():
            await asyncio.sleep(TUNNEL_CHECK_EVERY)
            try:
                if await in_thread(self._host_exec, self.tunnel.check) and self.stream:
                    self.stream.resync()
            except (WireGuardError, NetlinkError) as exc:
                log.error("WireGuard interface check failed: %s", exc)

    def _start_metrics(self) -> None:
        """Serve /metrics (docs/operations.md, "Metrics").  A port that cannot be bound
        is logged, not fatal: the routes matter more than their figures."""
        cfg = self.cfg
        if not cfg.metrics_port:
            return
        tls = (TlsFiles(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)
               if cfg.tls_ca and cfg.tls_cert and cfg.tls_key else None)
        server = MetricsServer(self.metrics.registry, cfg.metrics_address, cfg.metrics_port,
                               tls)
        try:
            port = server.start()
        except (OSError, ValueError) as exc:
            log.error("no /metrics: cannot serve on %s port %d (--metrics-address, "
                      "--metrics-port): %s", cfg.metrics_address, cfg.metrics_port, exc)
            return
        self._metrics_server = server
        log.info("serving /metrics on %s://%s:%d", "https" if tls else "http",
                 cfg.metrics_address, port)

    async def _shutdown(self, loop: asyncio.AbstractEventLoop, sock: socket.socket | None) -> None:
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.close)
        if self.stream is not None:
            self.stream.cancel_commands()
        if self.responder is not None:
            await self.responder.close()
        if self.plugin_service is not None:
            await self.plugin_service.close()
        if self._plugin_sock is not None:
            self._plugin_sock.close()
            if not self._plugin_sock_activated:  # systemd keeps listening on its own
                with contextlib.suppress(OSError):
                    Path(self.cfg.plugin_socket).unlink()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if sock is not None:
            sock.close()
            with contextlib.suppress(OSError):
                self.cfg.socket.unlink()
        if self.client is not None:
            await self.client.aclose()
        await in_thread(self._route_exec, self.table.close)
        self._route_exec.shutdown(wait=True)
        self._host_exec.shutdown(wait=True)


def run_agent(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT; 0, or 1 after a one-line error on stderr."""
    try:
        asyncio.run(Agent(cfg).run())
    except AgentStartupError as exc:
        print(f"daolinet-hostnet agent: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, never a traceback
        print(f"daolinet-hostnet agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
