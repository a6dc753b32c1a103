"""Docker's remote network driver and remote IPAM driver, served by the host agent.

Protocol: libnetwork `docs/remote.md` and `docs/ipam.md` (JSON POSTs over the unix
socket `/run/docker/plugins/daolinet.sock`).  Answers carry the content type
`application/vnd.docker.plugins.v1+json`; a refusal is `{"Err": "daolinet: ..."}`.

`DockerPlugin` puts the parts together: IPAM (ipam.py), the network driver
(driver.py), published ports (publish.py), reconciliation with Docker
(reconcile.py) and container moves (move.py), which share the addresses of
containers moving in (`pending_moves`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hostnet.agent.client import ControllerAPI
from hostnet.docker.common import (
    RESOLVE_TIMEOUT,
    DockerPortOps,
    NetworkDeletions,
    PluginDeps,
    PluginError,
)
from hostnet.docker.driver import NetworkDriver
from hostnet.docker.engine import PLUGIN_NAME, DockerAPI
from hostnet.docker.ipam import Ipam
from hostnet.docker.move import Mover
from hostnet.docker.policies import RestartPolicies
from hostnet.docker.publish import PortInUse, Publisher, local_port_in_use
from hostnet.docker.reconcile import Reconciler

log = logging.getLogger(__name__)

DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/daolinet.sock"
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class DockerPlugin:
    def __init__(
        self,
        host: str,
        controller: ControllerAPI,
        docker: DockerAPI,
        ops: DockerPortOps,
        *,
        executor: Executor | None = None,
        resolve_timeout: float = RESOLVE_TIMEOUT,
        port_in_use: PortInUse = local_port_in_use,
        state_dir: Path | None = None,
    ) -> None:
        """`state_dir`: where the containers' restart policies are kept (policies.py;
        None: in memory)."""
        deps = PluginDeps(host, controller, docker, ops, executor)
        self.pending_moves: dict[str, str] = {}  # ip -> endpoint id moving in here
        self.policies = RestartPolicies(state_dir)
        self.ipam = Ipam(deps, self.pending_moves, self.policies)
        self.publisher = Publisher(deps, port_in_use)
        subnets: dict[str, str] = {}  # Docker network id -> subnet, of this engine
        deletions = NetworkDeletions()
        self.reconciler = Reconciler(deps, self.ipam, self.publisher, self.policies, subnets,
                                     deletions)
        self.driver = NetworkDriver(
            deps, self.ipam, self.publisher, self.pending_moves, self.policies,
            resolve_timeout=resolve_timeout, subnets=subnets, deletions=deletions,
            forget_held=self.reconciler.forget_held,
        )
        self.mover = Mover(deps, self.pending_moves)
        self.handlers: dict[str, Handler] = {
            "Plugin.Activate": self.activate,
            "NetworkDriver.GetCapabilities": self.driver.capabilities,
            "NetworkDriver.CreateNetwork": self.driver.create_network,
            "NetworkDriver.DeleteNetwork": self.driver.delete_network,
            "NetworkDriver.CreateEndpoint": self.driver.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.driver.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": self.empty_value,
            "NetworkDriver.Join": self.driver.join,
            "NetworkDriver.Leave": self.empty,
            "NetworkDriver.DiscoverNew": self.empty,
            "NetworkDriver.DiscoverDelete": self.empty,
            "NetworkDriver.ProgramExternalConnectivity": self.publisher.program,
            "NetworkDriver.RevokeExternalConnectivity": self.publisher.revoke,
            "NetworkDriver.AllocateNetwork": self.empty,
            "NetworkDriver.FreeNetwork": self.empty,
            "IpamDriver.GetCapabilities": self.ipam.capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.ipam.address_spaces,
            "IpamDriver.RequestPool": self.ipam.request_pool,
            "IpamDriver.ReleasePool": self.empty,
            "IpamDriver.RequestAddress": self.ipam.request_address,
            "IpamDriver.ReleaseAddress": self.ipam.release_address,
        }

    async def activate(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    async def empty(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def empty_value(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Value": {}}

    async def close(self) -> None:
        """Cancel the driver's background work (naming endpoints, binding networks)."""
        await self.driver.close()

    async def command(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A command from the controller (container move)."""
        return await self.mover.command(op, args)

    async def reconcile(self, *, held_only: bool = False) -> None:
        await self.reconciler.reconcile(held_only=held_only)

    async def container_renamed(self, docker_id: str, name: str) -> None:
        """`docker rename`: the container's endpoints here take its new name (what
        policies speak of and other containers resolve)."""
        for ep in await self.driver.deps.controller.list_containers(self.driver.deps.host):
            if ep.get("docker_id") == docker_id and ep.get("name") != name:
                await self.driver.deps.controller.update_container(str(ep["id"]), name=name)
                log.info("endpoint %s renamed %s -> %s", ep["id"], ep.get("name"), name)

    async def sync_networks(self) -> None:
        await self.reconciler.sync_networks()


def _answer(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=CONTENT_TYPE)


# How a plugin request ended (the agent counts them: hostnet/agent/metrics/instruments.py):
# answered, refused by the plugin (an error Docker shows), not a request of the
# protocol (unknown method, body not JSON), a bug.
OK, REFUSED, BAD_REQUEST, FAILED = "ok", "refused", "bad_request", "failed"
OUTCOMES = (OK, REFUSED, BAD_REQUEST, FAILED)
UNKNOWN_METHOD = "unknown"  # the endpoint of a method the plugin does not have

# Told each request's endpoint (its method, or UNKNOWN_METHOD) and outcome.
Observer = Callable[[str, str], None]


def create_plugin_app(plugin: DockerPlugin, observe: Observer | None = None) -> FastAPI:
    app = FastAPI(title="daolinet Docker plugin", docs_url=None, redoc_url=None,
                  openapi_url=None)
    seen: Observer = observe or (lambda endpoint, outcome: None)

    @app.post("/{method}")
    async def call(method: str, request: Request) -> JSONResponse:
        handler = plugin.handlers.get(method)
        if handler is None:
            seen(UNKNOWN_METHOD, BAD_REQUEST)
            return _answer({"Err": f"{PLUGIN_NAME}: unknown method {method}"}, 404)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            seen(method, BAD_REQUEST)
            return _answer({"Err": f"{PLUGIN_NAME}: request body is not JSON"}, 400)
        if not isinstance(body, dict):
            body = {}
        try:
            answer = _answer(await handler(body))
        except PluginError as exc:
            log.info("%s refused: %s", method, exc)
            seen(method, REFUSED)
            return _answer({"Err": f"{PLUGIN_NAME}: {exc}"}, 500)
        except Exception as exc:  # a bug: one line to Docker, the trace to our log
            log.exception("%s failed", method)
            seen(method, FAILED)
            return _answer({"Err": f"{PLUGIN_NAME}: {type(exc).__name__}: {exc}"}, 500)
        seen(method, OK)
        return answer

    return app
