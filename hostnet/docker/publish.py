"""`docker run -p` on a daolinet network: daolinet's published ports.

libnetwork calls `ProgramExternalConnectivity` after `Join`, for the endpoint that
gives the container its default gateway and only on a network that is not
`--internal` (libnetwork endpoint.go), with the sandbox's options; among them
`com.docker.network.portmap`, a list of libnetwork `types.PortBinding` in Go's JSON:
`{"Proto": 6|17|132, "IP": "", "Port": 7000, "HostIP": "", "HostPort": 8081,
"HostPortEnd": 8081}` (Proto is the IP protocol number; HostPort 0 for `-p 7000`
and `-P`; HostPortEnd > HostPort for `-p 8081-8090:7000`).  Each binding becomes a
published port of the container at the controller (`POST /containers/{id}/ports`,
DNAT on the container's host, docs/architecture.md "Docker"), all or none.  The ids
go into the endpoint's OVS port (DOCKER_PUBLISHED_KEY), so the agent keeps no state:
`RevokeExternalConnectivity` (container stop, `docker network disconnect`) and
`DeleteEndpoint` unpublish what the port names.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hostnet.agent.client import ControllerError
from hostnet.docker.common import (
    DOCKER_ENDPOINT_KEY,
    DOCKER_PUBLISHED_KEY,
    PluginDeps,
    PluginError,
    from_controller,
)
from hostnet.host.ovs import ENDPOINT_KEY
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)

PORTMAP = "com.docker.network.portmap"
PROTOCOLS = {6: "tcp", 17: "udp"}
# Host ports tried for a binding without one (`-p 7000`, `-P`), like Docker's default.
EPHEMERAL = range(49153, 65536)
# Host addresses that mean "every address of the host" (Docker's default).
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
MAX_BINDINGS = 256

PortInUse = Callable[[str, int], bool]


@dataclass(frozen=True)
class Binding:
    """One `-p`: a container port and the host ports it may be published on."""

    protocol: str
    container_port: int
    host_ports: range

    def __str__(self) -> str:
        if len(self.host_ports) == 1:
            host = str(self.host_ports[0])
        else:
            host = f"{self.host_ports[0]}-{self.host_ports[-1]}"
        return f"{host}:{self.container_port}/{self.protocol}"


def _port(value: Any, what: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise PluginError(f"{PORTMAP}: {what} {value!r} is not a port number")
    port = int(value)
    if not (0 if zero else 1) <= port <= 65535:
        raise PluginError(f"{PORTMAP}: {what} {port} is not a port number")
    return port


def bindings_of(options: dict[str, Any]) -> list[Binding]:
    """The port bindings in the options of ProgramExternalConnectivity, checked."""
    raw = options.get(PORTMAP) or []
    if not isinstance(raw, list) or len(raw) > MAX_BINDINGS:
        raise PluginError(f"{PORTMAP} must be a list of at most {MAX_BINDINGS} bindings")
    found: list[Binding] = []
    for item in raw:
        if not isinstance(item, dict):
            raise PluginError(f"{PORTMAP}: a binding is not an object")
        container_port = _port(item.get("Port"), "Port")
        protocol = PROTOCOLS.get(item.get("Proto"))  # type: ignore[arg-type]
        if protocol is None:
            raise PluginError(
                f"-p {container_port}: protocol {item.get('Proto')!r} is not published, "
                "only tcp and udp"
            )
        host_ip = str(item.get("HostIP") or "")
        if host_ip not in WILDCARDS:
            raise PluginError(
                f"-p {host_ip}:...:{container_port}: daolinet publishes on every address of "
                "the host, not on one; leave the address out"
            )
        first = _port(item.get("HostPort") or 0, "HostPort", zero=True)
        last = _port(item.get("HostPortEnd") or 0, "HostPortEnd", zero=True)
        ports = EPHEMERAL if first == 0 else range(first, max(first, last) + 1)
        binding = Binding(protocol, container_port, ports)
        if binding not in found:
            found.append(binding)
    return found


def local_port_in_use(protocol: str, port: int) -> bool:
    """Whether a process of this host (the agent's namespace) holds `port`: a DNAT
    would take its traffic away.  A TCP socket in TIME_WAIT does not count
    (SO_REUSEADDR); a port the agent may not bind (EACCES) counts as free."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if protocol == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


class Publisher:
    """ProgramExternalConnectivity / RevokeExternalConnectivity of the network driver."""

    def __init__(self, deps: PluginDeps, port_in_use: PortInUse = local_port_in_use) -> None:
        self.deps = deps
        self.port_in_use = port_in_use

    async def _port_of(self, docker_endpoint: str) -> tuple[str, dict[str, str]] | None:
        ports = await in_thread(self.deps.executor, self.deps.ops.ports)
        for port, ids in sorted(ports.items()):
            if ids.get(DOCKER_ENDPOINT_KEY) == docker_endpoint:
                return port, ids
        return None

    async def program(self, req: dict[str, Any]) -> dict[str, Any]:
        options = req.get("Options") or {}
        bindings = bindings_of(options if isinstance(options, dict) else {})
        docker_ep = str(req.get("EndpointID", ""))
        found = await self._port_of(docker_ep)
        if found is None:
            if not bindings:
                return {}
            raise PluginError(f"endpoint {docker_ep[:12]} is unknown on host {self.deps.host}")
        port, ids = found
        if ids.get(DOCKER_PUBLISHED_KEY):  # programmed before: this call replaces it
            await self.unpublish(port, ids)
        if not bindings:
            return {}
        ep = await from_controller(self.deps.controller.get_container(ids[ENDPOINT_KEY]))
        taken = {
            (str(p["protocol"]), int(p["host_port"])): p
            for p in await from_controller(self.deps.controller.published_ports())
            if p.get("host") == self.deps.host
        }
        made: list[str] = []
        try:
            for binding in bindings:
                made.append(await self._publish(ep, binding, taken))
            await in_thread(self.deps.executor, self.deps.ops.set_port_ids, port,
                            {DOCKER_PUBLISHED_KEY: ",".join(made)})
        except BaseException:
            await self._forget(str(ep["id"]), made)
            raise
        log.info("endpoint %s (%s): published %s", docker_ep[:12], ep["name"],
                 ", ".join(str(b) for b in bindings))
        return {}

    async def _publish(
        self, ep: dict[str, Any], binding: Binding, taken: dict[tuple[str, int], dict[str, Any]]
    ) -> str:
        """Publish `binding` on the first free host port of its range; its id."""
        proto, one = binding.protocol, len(binding.host_ports) == 1
        for host_port in binding.host_ports:
            holder = taken.get((proto, host_port))
            if holder is not None:
                if (holder.get("container"), holder.get("container_port")) == (
                    ep["name"], binding.container_port
                ):
                    return str(holder["id"])  # a container that moved here keeps its port
                if one:
                    raise PluginError(
                        f"host port {host_port}/{proto} on host {self.deps.host} is already "
                        f"published for container {holder.get('container')}"
                    )
                continue
            if self.port_in_use(proto, host_port):
                if one:
                    raise PluginError(
                        f"host port {host_port}/{proto} on host {self.deps.host} is in use "
                        "by a process of the host"
                    )
                continue
            try:
                made = await self.deps.controller.publish_port(
                    str(ep["id"]), host_port, binding.container_port, proto
                )
            except ControllerError as exc:
                if exc.status == 409 and not one:
                    continue  # taken meanwhile: the next one
                raise PluginError(exc.detail) from exc
            taken[(proto, host_port)] = made
            return str(made["id"])
        raise PluginError(
            f"-p {binding}: no free host port on host {self.deps.host}"
        )

    async def revoke(self, req: dict[str, Any]) -> dict[str, Any]:
        found = await self._port_of(str(req.get("EndpointID", "")))
        if found is not None and found[1].get(DOCKER_PUBLISHED_KEY):
            await self.unpublish(*found)
        return {}

    async def unpublish(self, port: str, ids: dict[str, str]) -> None:
        """Unpublish the ports that OVS port `port` names, and forget them there.

        An endpoint that moved to another host (`daolictl container move`) took its
        ports along: the old host only forgets them."""
        epid = ids[ENDPOINT_KEY]
        published = [p for p in ids.get(DOCKER_PUBLISHED_KEY, "").split(",") if p]
        try:
            ep = await self.deps.controller.get_container(epid)
        except ControllerError as exc:
            if exc.status != 404:
                raise PluginError(exc.detail) from exc
            ep = None
        if ep is not None and ep.get("host") == self.deps.host:
            await self._forget(epid, published)
        await in_thread(self.deps.executor, self.deps.ops.set_port_ids, port,
                        {DOCKER_PUBLISHED_KEY: ""})
        log.info("endpoint %s: unpublished %d port(s)", epid, len(published))

    async def _forget(self, epid: str, port_ids: list[str]) -> None:
        for port_id in port_ids:
            try:
                await self.deps.controller.unpublish_port(epid, port_id)
            except ControllerError as exc:
                if exc.status != 404:
                    raise PluginError(exc.detail) from exc
