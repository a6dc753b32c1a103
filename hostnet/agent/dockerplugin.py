"""Serving the Docker plugin (hostnet/docker/): its server on the plugin socket, the
endpoint check after a restart (then every few seconds for held addresses), and the
loop that keeps the local engine's networks those of the controller."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from hostnet.agent.client import ControllerError
from hostnet.agent.metrics.instruments import DOCKER_ENDPOINTS, DOCKER_NETWORKS, AgentMetrics
from hostnet.agent.servers import UnixServer
from hostnet.docker.common import PluginError
from hostnet.docker.engine import DockerClient, DockerError
from hostnet.docker.plugin import DockerPlugin, create_plugin_app
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import OvsError

log = logging.getLogger(__name__)

# How often the local Docker engine is brought in line with the daolinet networks.
NETWORK_SYNC_SECONDS = 2.0
# Every how many network syncs held addresses of containers that are gone (`docker rm`)
# are freed: Docker tells the plugin nothing when it removes a stopped container.
HELD_CHECK_EVERY = 3


class PluginService:
    def __init__(
        self, plugin: DockerPlugin, docker: DockerClient, sock: socket.socket,
        stop: asyncio.Event, metrics: AgentMetrics | None = None,
    ) -> None:
        self.plugin = plugin
        self.docker = docker
        self.sock = sock
        self.stop = stop
        self.metrics = metrics or AgentMetrics()
        self.metrics.known_endpoints(plugin.handlers)
        self.server = UnixServer(create_plugin_app(plugin, self.metrics.plugin_request))
        self._serving: asyncio.Future[None] | None = None
        self._syncing: asyncio.Future[None] | None = None
        self._checking: asyncio.Future[None] | None = None  # a one-off: ends by itself
        self._renames: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._serving = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
        self._checking = asyncio.ensure_future(self._reconcile())
        self._syncing = asyncio.ensure_future(self._sync_networks())
        self._renames = asyncio.ensure_future(self._follow_renames())

    async def close(self) -> None:
        """Stop serving, then the background work; close the Docker client."""
        if self._serving is not None:
            self.server.should_exit = True
            await self._serving
        for task in (self._syncing, self._renames):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.plugin.close()
        await self.docker.aclose()

    async def _sync_networks(self) -> None:
        """Every NETWORK_SYNC_SECONDS: the local engine gets every daolinet network."""
        rounds = 0
        while not self.stop.is_set():
            try:
                await self.plugin.sync_networks()
            except (DockerError, ControllerError, PluginError) as exc:
                log.warning("Docker network sync skipped: %s", exc)
                self.metrics.reconcile_failed(DOCKER_NETWORKS)
            except Exception:
                log.exception("Docker network sync failed")
                self.metrics.reconcile_failed(DOCKER_NETWORKS)
            rounds += 1
            if rounds % HELD_CHECK_EVERY == 0:
                await self._reconcile(held_only=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=NETWORK_SYNC_SECONDS)

    async def _follow_renames(self) -> None:
        """`docker rename` as it happens (Docker's event stream; the plugin hears of
        no rename otherwise): the endpoints take the new name within the event's
        latency, and what other containers resolve follows."""
        while not self.stop.is_set():
            try:
                async for docker_id, name in self.docker.renames():
                    try:
                        await self.plugin.container_renamed(docker_id, name)
                    except ControllerError as exc:
                        log.warning("rename of %s to %s not recorded: %s", docker_id[:12],
                                    name, exc.detail)
            except DockerError as exc:
                log.debug("Docker events: %s", exc)
            except Exception:
                log.exception("following Docker renames failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=NETWORK_SYNC_SECONDS)

    async def _reconcile(self, *, held_only: bool = False) -> None:
        try:
            await self.plugin.reconcile(held_only=held_only)
        except (DockerError, ControllerError, OvsError, NetlinkError) as exc:
            log.warning("Docker endpoint check skipped: %s", exc)
            self.metrics.reconcile_failed(DOCKER_ENDPOINTS)
        except Exception:
            log.exception("Docker endpoint check failed")
            self.metrics.reconcile_failed(DOCKER_ENDPOINTS)
