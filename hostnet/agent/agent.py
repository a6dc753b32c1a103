"""The host agent: bridge, registration, the route stream and the local API.

Blocking work (pyroute2, ovs-vsctl) runs in two single-thread executors: one owns
the `KernelRouteTable` (first-packet path, never queued behind an attach) and one
does everything else on the host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvicorn
from pydantic import TypeAdapter, ValidationError
from websockets.exceptions import ConnectionClosedError, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

from controller.desired.models import KernelRoute, NatRule
from hostnet.agent.client import (
    ControllerClient,
    ControllerError,
    ControllerUnreachable,
    Registration,
    controller_urls,
    stream_url,
)
from hostnet.agent.localapi import create_app
from hostnet.docker.common import PluginError
from hostnet.docker.driver import SystemDockerPortOps
from hostnet.docker.engine import DEFAULT_DOCKER_HOST, DockerClient, DockerError
from hostnet.docker.plugin import DockerPlugin, create_plugin_app
from hostnet.host import netlink
from hostnet.host.attach import Attacher, SystemHostOps
from hostnet.host.nat import NatError, NatTable
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import Ovs, OvsError, detect_datapath_type
from hostnet.host.routes import KernelRouteTable
from hostnet.host.wireguard import (
    MeshHost,
    WgConfig,
    WireGuard,
    WireGuardError,
    ensure_host,
    merge_hosts,
    peers_for,
    public_key_of,
)

log = logging.getLogger("hostnet.agent.agent")
T = TypeVar("T")

DEFAULT_SOCKET = "/run/daolinet/hostnet.sock"
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
REPLICA_BACKOFF_MAX = 0.5  # with several controller replicas, during an election
# How often the local Docker engine is brought in line with the daolinet networks.
NETWORK_SYNC_SECONDS = 2.0
_ROUTES = TypeAdapter(list[KernelRoute])
_NAT = TypeAdapter(list[NatRule])


class AgentStartupError(Exception):
    """The agent cannot start; the message is the one line shown to the operator."""


@dataclass
class AgentConfig:
    controller: str
    token_file: Path
    host: str
    ovsdb: str
    bridge: str = "br-dl"
    address: str | None = None
    socket_path: Path = field(default_factory=lambda: Path(DEFAULT_SOCKET))
    site: str = "default"
    datapath_type: str = "auto"
    connect_timeout: float = 30.0
    # Docker plugin socket ("" = no Docker plugin; the CLI defaults to
    # /run/docker/plugins/daolinet.sock) and the Docker API it resolves names with.
    plugin_socket: str = ""
    docker_host: str = DEFAULT_DOCKER_HOST
    # WireGuard provisioning file (hostnet/host/wireguard.py); None: no tunnel, one site only
    wireguard: Path | None = None
    key_switch_delay: float = 0.5  # after wg-commit, so peers learn the new key first


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise AgentStartupError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise AgentStartupError(f"token file {path} is empty")
    return token


def controller_ipv4(controller: str) -> str:
    """The IPv4 address of the controller URL's host (resolving a name)."""
    host = urlsplit(controller).hostname
    if not host:
        raise AgentStartupError(f"controller URL {controller!r} has no host")
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise AgentStartupError(f"cannot resolve controller host {host}: {exc}") from exc
    return str(infos[0][4][0])


def next_backoff(current: float) -> float:
    return min(BACKOFF_MAX, max(BACKOFF_MIN, current * 2))


def bind_unix_socket(path: Path, mode: int = 0o660) -> socket.socket:
    """Bind a listening unix socket at `path`, replacing a stale socket file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise AgentStartupError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: stale
        else:
            raise AgentStartupError(f"another agent is already serving {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        raise AgentStartupError(f"cannot bind {path}: {exc.strerror}") from exc
    return sock


class _UnixServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.ovs = Ovs(cfg.ovsdb)
        self.datapath_type = (
            detect_datapath_type() if cfg.datapath_type == "auto" else cfg.datapath_type
        )
        self.client: ControllerClient | None = None
        self.registration: Registration | None = None
        self.address: str | None = cfg.address
        self._route_exec = ThreadPoolExecutor(1, thread_name_prefix="routes")
        self._host_exec = ThreadPoolExecutor(1, thread_name_prefix="host")
        self.table = KernelRouteTable(cfg.bridge)
        self.nat = NatTable()
        self.wg_cfg: WgConfig | None = None
        self.wg: WireGuard | None = None
        self._mesh_hosts: list[MeshHost] = []
        self._stop = asyncio.Event()
        self._server: _UnixServer | None = None
        self._plugin_server: _UnixServer | None = None
        self.plugin: DockerPlugin | None = None
        self._commands: set[concurrent.futures.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_seq: int | None = None
        self._ws: ClientConnection | None = None

    # -- helpers ------------------------------------------------------------------

    async def _host(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._host_exec, lambda: fn(*args, **kwargs))

    async def _routes(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._route_exec, lambda: fn(*args))

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close()  # ends the blocking stream on the route thread
        if self._server is not None:
            self._server.should_exit = True

    # -- startup ------------------------------------------------------------------

    async def _register(self) -> Registration:
        assert self.client is not None and self.address is not None
        reg = await self.client.register(
            self.cfg.host, self.address, self.cfg.site, await self._host(self._wg_fields)
        )
        await self._host(
            self.ovs.ensure_bridge, self.cfg.bridge, self.datapath_type, reg.dpid,
            reg.openflow_targets,
        )
        self.registration = reg
        return reg

    async def _register_with_retry(self) -> Registration:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.connect_timeout
        delay = BACKOFF_MIN
        last = ""
        while True:
            try:
                if self.address is None:
                    target = controller_ipv4(self.client.base_url)
                    self.address = await self._host(netlink.source_address_for, target)
                return await self._register()
            except ControllerUnreachable as exc:
                last = exc.detail
            except ControllerError as exc:
                if exc.status < 500:
                    raise AgentStartupError(
                        f"controller refused registration of {self.cfg.host}: {exc.detail}"
                    ) from exc
                last = exc.detail
            except AgentStartupError as exc:
                last = str(exc)
            except NetlinkError as exc:
                last = f"cannot find a source address towards the controller: {exc}"
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AgentStartupError(
                    f"controller not reachable within {self.cfg.connect_timeout:g}s: {last}"
                )
            log.debug("registration failed (%s); retrying", last)
            await asyncio.sleep(min(delay, remaining))
            delay = next_backoff(delay)

    def _prepare_bridge_interface(self) -> None:
        netlink.wait_for_link(self.cfg.bridge, timeout=10.0)
        netlink.set_link_up(self.cfg.bridge)
        netlink.set_sysctls(self.cfg.bridge)

    async def remove_orphans(self) -> list[str]:
        """Delete OVS ports (and veths) of endpoints the controller no longer lists here."""
        assert self.client is not None
        try:
            endpoints = await self.client.list_containers(self.cfg.host)
        except ControllerError as exc:
            log.warning("orphan check skipped: %s", exc.detail)
            return []
        known = {str(e.get("id")) for e in endpoints}
        ports = await self._host(self.ovs.list_ports_with_endpoint, self.cfg.bridge)
        removed = []
        for port, endpoint in sorted(ports.items()):
            if endpoint in known:
                continue
            try:
                await self._host(self.ovs.del_port, self.cfg.bridge, port)
                await self._host(netlink.delete_link, port)
            except (OvsError, NetlinkError) as exc:
                log.error("cannot remove orphan port %s: %s", port, exc)
                continue
            log.info("removed orphan port %s (endpoint %s)", port, endpoint)
            removed.append(port)
        return removed

    async def startup(self) -> socket.socket:
        token = read_token(self.cfg.token_file)
        try:
            for url in controller_urls(self.cfg.controller):
                stream_url(url, self.cfg.host)
        except ValueError as exc:
            raise AgentStartupError(str(exc)) from exc
        self.client = ControllerClient(self.cfg.controller, token)
        try:
            await self._host(self.ovs.ensure_bridge, self.cfg.bridge, self.datapath_type)
            await self._wg_startup()
            reg = await self._register_with_retry()
            await self._host(self._prepare_bridge_interface)
        except (OvsError, NetlinkError) as exc:
            raise AgentStartupError(str(exc)) from exc
        log.info(
            "registered %s address=%s dpid=%016x targets=%s datapath=%s",
            self.cfg.host, self.address, reg.dpid, ",".join(reg.openflow_targets),
            self.datapath_type,
        )
        await self.remove_orphans()
        sock = bind_unix_socket(self.cfg.socket_path)
        if self.cfg.plugin_socket:
            try:
                self._plugin_sock = bind_unix_socket(Path(self.cfg.plugin_socket))
            except AgentStartupError:
                sock.close()
                raise
        return sock

    # -- the stream ---------------------------------------------------------------

    async def handle_message(self, msg: Any) -> dict[str, Any] | None:
        """Apply one stream message on the route thread; the ack/nack to send."""
        return await self._routes(self.apply_message, msg)

    def apply_message(self, msg: Any) -> dict[str, Any] | None:
        """Apply one stream message (route thread only); the ack/nack to send."""
        if not isinstance(msg, dict):
            log.warning("ignoring stream message that is not an object")
            return None
        kind, seq = msg.get("type"), msg.get("seq")
        if kind not in ("snapshot", "delta", "nat", "mesh") or not isinstance(seq, int):
            log.warning("ignoring stream message type=%r seq=%r", kind, seq)
            return None
        try:
            if kind == "mesh":
                self._apply_mesh(msg.get("hosts", []))
                log.info("mesh %d: %d peers", seq, len(self.wg.peers) if self.wg else 0)
            elif kind == "nat":
                rules = _NAT.validate_python(msg.get("rules", []))
                self.nat.apply(rules)
                log.info("nat %d: %d rules", seq, len(rules))
            elif kind == "snapshot":
                routes = _ROUTES.validate_python(msg.get("routes", []))
                if self.wg is not None:
                    self.wg.set_routes(routes)  # allowed-ips before the routes use them
                plan = self.table.apply_snapshot(routes)
                log.info(
                    "snapshot %d: %d routes (+%d, -%d routes, -%d neighbours)", seq,
                    len(routes), len(plan.install), len(plan.delete_routes),
                    len(plan.delete_neighbours),
                )
            else:
                add = _ROUTES.validate_python(msg.get("add", []))
                remove = _ROUTES.validate_python(msg.get("remove", []))
                if self.wg is not None:
                    self.wg.change_routes(add, ())
                self.table.apply_delta(add, remove)
                if self.wg is not None:
                    self.wg.change_routes((), remove)  # after the routes are gone
                log.debug("delta %d: +%d -%d", seq, len(add), len(remove))
        except ValidationError as exc:
            err = " ".join(str(exc).split())
            log.error("%s %d rejected: %s", kind, seq, err)
            return {"type": "nack", "seq": seq, "error": f"invalid {kind}: {err}"}
        except (NetlinkError, NatError, WireGuardError, ValueError) as exc:
            log.error("%s %d failed: %s", kind, seq, exc)
            return {"type": "nack", "seq": seq, "error": str(exc)}
        except Exception as exc:  # a bug: say so to the controller, keep the stream
            log.exception("%s %d failed unexpectedly", kind, seq)
            return {"type": "nack", "seq": seq, "error": f"{type(exc).__name__}: {exc}"}
        self.last_seq = seq
        return {"type": "ack", "seq": seq}

    async def _stream_once(self, token: str) -> bool:
        """One stream connection; True once a message was received.

        The connection lives on the route thread, which also owns the kernel route
        table: a delta is read, applied and acknowledged with no thread hand-off,
        because every hop here adds to the first packet of a new connection.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._route_exec, self._stream_blocking, token)

    def _stream_blocking(self, token: str) -> bool:
        assert self.client is not None
        url = stream_url(self.client.base_url, self.cfg.host)
        got = False
        with sync_connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            max_size=64 * 1024 * 1024,
        ) as ws:
            self._ws = ws
            try:
                if self._stop.is_set():
                    return got
                log.info("stream connected to %s", url)
                for raw in ws:
                    got = True
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        log.warning("ignoring stream message that is not JSON")
                        continue
                    if isinstance(msg, dict) and msg.get("type") == "command":
                        self._dispatch_command(ws, msg)
                        continue
                    reply = self.apply_message(msg)
                    if reply is not None:
                        ws.send(json.dumps(reply))
            finally:
                self._ws = None
        return got

    # -- WireGuard (docs/architecture.md, "Sites") ---------------------------------

    async def _wg_startup(self) -> None:
        """Bring up this host's side of the mesh before registering (the control path
        to a controller in another site goes through it)."""
        if self.cfg.wireguard is None:
            return
        try:
            cfg = WgConfig.load(self.cfg.wireguard)
            if cfg.name != self.cfg.host:
                raise AgentStartupError(
                    f"{self.cfg.wireguard} is for host {cfg.name}, not {self.cfg.host}"
                )
            public, impl = await self._host(ensure_host, cfg)
            self.wg_cfg = cfg
            self._mesh_hosts = list(cfg.hosts)
            self.wg = WireGuard(cfg.interface)
            await self._routes(self._apply_mesh, [])
        except WireGuardError as exc:
            raise AgentStartupError(f"WireGuard: {exc}") from exc
        log.info("WireGuard %s (%s) tunnel %s public key %s", cfg.interface, impl,
                 cfg.address, public)

    def _wg_fields(self) -> dict[str, Any]:
        cfg = self.wg_cfg
        if cfg is None:
            return {}
        return {
            "wg_public_key": public_key_of(cfg.private_key_file),
            "wg_endpoint": cfg.endpoint,
            "tunnel_address": str(cfg.address.ip),
            "relay": cfg.relay,
        }

    def _apply_mesh(self, hosts: Any) -> None:
        """The controller's host list (route thread): peers = hosts of other sites."""
        if self.wg is None or self.wg_cfg is None:
            return
        if not isinstance(hosts, list):
            raise ValueError("mesh hosts must be a list")
        known = [MeshHost.model_validate(h) for h in hosts if isinstance(h, dict)]
        merged = merge_hosts(self.wg_cfg.hosts, known)
        public = public_key_of(self.wg_cfg.private_key_file)
        self.wg.set_mesh(peers_for(self.wg_cfg, public, merged))

    async def _wg_command(self, seq: Any, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """wg-keygen: a new key pair (pending); wg-commit: switch to it shortly."""
        wg, cfg = self.wg, self.wg_cfg
        try:
            if wg is None or cfg is None:
                raise WireGuardError(f"host {self.cfg.host} has no WireGuard interface")
            if op == "wg-keygen":
                # (not on the route thread: the stream connection lives there)
                public = await self._host(WireGuard.new_key, cfg.private_key_file)
                data: dict[str, Any] = {"public_key": public}
            elif op == "wg-commit":
                delay = float(args.get("delay", self.cfg.key_switch_delay))
                loop = asyncio.get_running_loop()
                loop.call_later(delay, self._host_exec.submit, self._commit_key)
                data = {"switch_in": delay}
            else:
                raise WireGuardError(f"unknown command {op}")
        except (WireGuardError, OSError, ValueError) as exc:
            log.error("command %s failed: %s", op, exc)
            return {"type": "result", "seq": seq, "ok": False, "error": str(exc)}
        log.info("command %s done", op)
        return {"type": "result", "seq": seq, "ok": True, "data": data}

    def _commit_key(self) -> None:
        assert self.wg is not None and self.wg_cfg is not None
        try:
            public = self.wg.commit_key(self.wg_cfg.private_key_file)
        except (WireGuardError, OSError) as exc:
            log.error("WireGuard key switch failed: %s", exc)
            return
        log.info("WireGuard key switched; public key %s", public)

    # -- commands (controller -> agent requests, answered by a "result") ----------

    def _dispatch_command(self, ws: Any, msg: dict[str, Any]) -> None:
        """Run a command on the event loop (route thread: never wait for it here)."""
        if self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._command(ws, msg), self._loop)
        self._commands.add(future)
        future.add_done_callback(self._commands.discard)

    async def run_command(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Run a controller command (container move); the result message to send."""
        seq, op, args = msg.get("seq"), str(msg.get("op")), msg.get("args")
        if op.startswith("wg-"):
            return await self._wg_command(seq, op, args if isinstance(args, dict) else {})
        try:
            if self.plugin is None:
                raise PluginError(f"host {self.cfg.host} serves no Docker plugin")
            data = await self.plugin.command(op, args if isinstance(args, dict) else {})
        except (PluginError, DockerError, ControllerError, KeyError) as exc:
            log.error("command %s failed: %s", op, exc)
            return {"type": "result", "seq": seq, "ok": False, "error": str(exc)}
        except Exception as exc:  # a bug: tell the controller, keep the stream
            log.exception("command %s failed unexpectedly", op)
            return {"type": "result", "seq": seq, "ok": False,
                    "error": f"{type(exc).__name__}: {exc}"}
        log.info("command %s done", op)
        return {"type": "result", "seq": seq, "ok": True, "data": data}

    async def _command(self, ws: Any, msg: dict[str, Any]) -> None:
        reply = await self.run_command(msg)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(WebSocketException, OSError):
            await loop.run_in_executor(None, ws.send, json.dumps(reply))

    async def stream_forever(self) -> None:
        """Keep the stream up, moving on to the next controller replica when one
        refuses it (it does not master this host's switch) or goes away; the backoff
        grows only once every replica has been tried."""
        assert self.client is not None
        delay = BACKOFF_MIN
        first = True
        tried = 0
        while not self._stop.is_set():
            try:
                if not first:
                    await self._register()  # the controller may have restarted
                first = False
                if await self._stream_once(self.client.token):
                    delay = BACKOFF_MIN
                    tried = 0
                log.warning("stream closed by the controller %s", self.client.base_url)
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                log.warning("stream refused: HTTP %s", exc.response.status_code)
            except ConnectionClosedError as exc:
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                log.warning("stream of %s ended: %s", self.client.base_url,
                            reason or " ".join(str(exc).split()))
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("stream lost: %s", " ".join(str(exc).split()) or type(exc).__name__)
            except ControllerError as exc:
                log.warning("re-registration failed: %s", exc.detail)
            except (OvsError, NetlinkError) as exc:
                log.error("bridge update after re-registration failed: %s", exc)
            except Exception:  # never let the stream die: log and reconnect
                log.exception("stream failed unexpectedly")
            tried += 1
            self.client.rotate()
            pause = BACKOFF_MIN / 2
            if tried >= len(self.client.urls):
                pause, delay, tried = delay, next_backoff(delay), 0
                if len(self.client.urls) > 1:
                    # replicas: one of them is being elected; look again soon
                    pause = min(pause, REPLICA_BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=pause)

    # -- Docker plugin ------------------------------------------------------------

    _plugin_sock: socket.socket | None = None
    _reconcile_task: asyncio.Future[None] | None = None
    _sync_task: asyncio.Future[None] | None = None

    def _start_plugin(self) -> asyncio.Future[None] | None:
        if self._plugin_sock is None:
            return None
        assert self.client is not None
        ops = SystemDockerPortOps(
            self.ovs, self.cfg.bridge, tx_offload_off=self.datapath_type == "netdev"
        )
        self.plugin = DockerPlugin(
            self.cfg.host, self.client, DockerClient(self.cfg.docker_host), ops,
            executor=self._host_exec,
        )
        config = uvicorn.Config(
            create_plugin_app(self.plugin), lifespan="off", access_log=False,
            log_level="warning", log_config=None,
        )
        self._plugin_server = _UnixServer(config)
        task = asyncio.ensure_future(self._plugin_server.serve(sockets=[self._plugin_sock]))
        self._reconcile_task = asyncio.ensure_future(self._reconcile_docker())
        self._sync_task = asyncio.ensure_future(self._sync_docker_networks())
        log.info("serving the Docker plugin on %s (Docker API %s)", self.cfg.plugin_socket,
                 self.cfg.docker_host)
        return task

    async def _sync_docker_networks(self) -> None:
        """Every NETWORK_SYNC_SECONDS: the local engine gets every daolinet network."""
        assert self.plugin is not None
        while not self._stop.is_set():
            try:
                await self.plugin.sync_networks()
            except (DockerError, ControllerError, PluginError) as exc:
                log.warning("Docker network sync skipped: %s", exc)
            except Exception:
                log.exception("Docker network sync failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=NETWORK_SYNC_SECONDS)

    async def _reconcile_docker(self) -> None:
        assert self.plugin is not None
        try:
            await self.plugin.reconcile()
        except (DockerError, ControllerError, OvsError, NetlinkError) as exc:
            log.warning("Docker endpoint check skipped: %s", exc)
        except Exception:
            log.exception("Docker endpoint check failed")

    # -- main ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
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
            assert self.client is not None
            attacher = Attacher(
                self.cfg.host,
                self.client,
                SystemHostOps(
                    self.ovs, self.cfg.bridge, tx_offload_off=self.datapath_type == "netdev"
                ),
                executor=self._host_exec,
            )
            config = uvicorn.Config(
                create_app(attacher), lifespan="off", access_log=False, log_level="warning",
                log_config=None,
            )
            self._server = _UnixServer(config)
            if self._stop.is_set():
                return
            server_task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
            plugin_task = self._start_plugin()
            stream_task = asyncio.ensure_future(self.stream_forever())
            log.info("serving the local API on %s", self.cfg.socket_path)
            await self._stop.wait()
            stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream_task
            self._server.should_exit = True
            await server_task
            if plugin_task is not None and self._plugin_server is not None:
                self._plugin_server.should_exit = True
                await plugin_task
        finally:
            for task in list(self._commands):
                task.cancel()
            if self._sync_task is not None:
                self._sync_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sync_task
            if self.plugin is not None:
                await self.plugin.close()
                assert isinstance(self.plugin.docker, DockerClient)
                await self.plugin.docker.aclose()
            if self._plugin_sock is not None:
                self._plugin_sock.close()
                with contextlib.suppress(OSError):
                    Path(self.cfg.plugin_socket).unlink()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if sock is not None:
                sock.close()
                with contextlib.suppress(OSError):
                    self.cfg.socket_path.unlink()
            if self.client is not None:
                await self.client.aclose()
            await loop.run_in_executor(self._route_exec, self.table.close)
            self._route_exec.shutdown(wait=True)
            self._host_exec.shutdown(wait=True)
            if started:
                log.info("agent stopped")


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
