"""Docker's remote network driver (libnetwork `docs/remote.md`): networks, endpoints, joins.

The driver keeps no state that a restart could lose: the controller holds networks
and endpoints, Docker its networks and containers, and the OVS port of an endpoint
carries the Docker endpoint id in its external_ids.  A container's port is plugged
as the local attach plugs one (hostnet/host/ports.py); Docker moves the container
end into the container itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from controller.desired.models import DNS_LABEL, MAX_ALIASES
from hostnet.agent.client import ControllerError
from hostnet.docker.common import (
    ADDRESS_SPACE,
    DOCKER_ENDPOINT_KEY,
    DOCKER_PUBLISHED_KEY,
    PROVISIONAL_PREFIX,
    RESOLVE_TIMEOUT,
    NetworkDeletions,
    PluginDeps,
    PluginError,
    from_controller,
    ipv4_of,
    subnet_of,
)
from hostnet.docker.engine import MTU_OPTION, DockerError, docker_subnets
from hostnet.docker.ipam import Ipam
from hostnet.docker.policies import RestartPolicies
from hostnet.docker.publish import Publisher
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import CONTAINER_KEY, ENDPOINT_KEY, OvsError
from hostnet.host.ports import peer_temp_name, plug, unplug
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)

_DNS_NAME = re.compile(rf"^{DNS_LABEL}(?:\.{DNS_LABEL})*$")

# Where Docker puts the `-o KEY=VALUE` pairs of `docker network create` (netlabel.GenericData).
GENERIC_OPTIONS = "com.docker.network.generic"
# A network's MTU as the controller takes it (controller/desired/validation.py).
MTU_MIN, MTU_MAX = 576, 9000


def check_driver_options(options: dict[str, Any]) -> None:
    """Refuse a `docker network create -o KEY=VALUE` that daolinet does not know.

    Docker passes the `-o` pairs as `com.docker.network.generic` (strings) among its
    own options (`com.docker.network.enable_ipv6`, `com.docker.network.internal`).
    The one daolinet knows is Docker's own MTU option, MTU_OPTION; the daolinet
    network is made from Docker's record of it (ipam.py)."""
    generic = options.get(GENERIC_OPTIONS) or {}
    if not isinstance(generic, dict):
        raise PluginError(f"{GENERIC_OPTIONS} is not a map")
    for key, value in sorted(generic.items()):
        if key != MTU_OPTION:
            raise PluginError(
                f"unknown option -o {key}: daolinet networks take only -o {MTU_OPTION}=N"
            )
        text = str(value).strip()
        if not text.isdigit() or not MTU_MIN <= int(text) <= MTU_MAX:
            raise PluginError(f"-o {MTU_OPTION}={value}: the MTU must be {MTU_MIN}-{MTU_MAX}")


# Naming an endpoint whose name another container here still holds: how often, how
# long apart (that container's own naming frees it within a resolution).
NAME_ATTEMPTS = 20
NAME_RETRY_SECONDS = 0.25


class NetworkDriver:
    def __init__(
        self, deps: PluginDeps, ipam: Ipam, publisher: Publisher, pending_moves: dict[str, str],
        policies: RestartPolicies, *, resolve_timeout: float = RESOLVE_TIMEOUT,
        subnets: dict[str, str] | None = None, deletions: NetworkDeletions | None = None,
        forget_held: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """`forget_held(network)`: forgets the held addresses of removed containers
        before DeleteNetwork deletes the daolinet network (reconcile.py);
        `deletions`: DeleteNetwork calls, counted for the network sync."""
        self.deps = deps
        self.forget_held = forget_held
        self.deletions = deletions if deletions is not None else NetworkDeletions()
        self.ipam = ipam
        self.publisher = publisher
        self.policies = policies
        self.pending_moves = pending_moves  # ip -> endpoint id moving in here
        self.resolve_timeout = resolve_timeout
        # Docker network id -> subnet: DeleteNetwork names only the id, and Docker hides
        # a network it is deleting.  Filled at CreateNetwork and by every network sync
        # (reconcile.py), so an agent started after the network was made knows it too.
        self._subnets: dict[str, str] = subnets if subnets is not None else {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._plugged: set[str] = set()  # endpoint ids plugged since this agent started

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def port_of(self, docker_endpoint: str) -> tuple[str, dict[str, str]] | None:
        """The OVS port (and its external_ids) of a Docker endpoint."""
        ports = await in_thread(self.deps.executor, self.deps.ops.ports)
        for port, ids in sorted(ports.items()):
            if ids.get(DOCKER_ENDPOINT_KEY) == docker_endpoint:
                return port, ids
        return None

    async def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        # Data scope "local": each Docker engine keeps its own record of the network
        # (there is no Docker cluster store); connectivity is global, and the
        # controller is what makes the network one network on every host.
        return {"Scope": "local", "ConnectivityScope": "global"}

    # -- networks -----------------------------------------------------------------

    async def create_network(self, req: dict[str, Any]) -> dict[str, Any]:
        data = [d for d in req.get("IPv4Data") or [] if isinstance(d, dict)]
        if not data or data[0].get("AddressSpace") != ADDRESS_SPACE:
            raise PluginError(
                "daolinet networks need the daolinet IPAM driver: add --ipam-driver daolinet"
            )
        if req.get("IPv6Data"):
            raise PluginError("IPv6 is not supported")
        check_driver_options(req.get("Options") or {})
        network_id = str(req.get("NetworkID", ""))
        subnet = str(subnet_of(data[0].get("Pool")))
        self._subnets[network_id] = subnet
        self._spawn(self._bind_network(network_id, subnet))
        return {}

    async def _bind_network(self, network_id: str, subnet: str) -> None:
        """Once Docker lists the new network, create it at the controller by name."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resolve_timeout
        while loop.time() < deadline:
            try:
                if await self.deps.docker.network(network_id) is not None:
                    await self.ipam.network_for_subnet(subnet_of(subnet))
                    return
            except (DockerError, PluginError) as exc:
                log.warning("network %s (%s): %s", network_id[:12], subnet, exc)
                return
            await asyncio.sleep(0.1)
        log.warning("network %s did not show up in Docker", network_id[:12])

    async def delete_network(self, req: dict[str, Any]) -> dict[str, Any]:
        self.deletions.begun += 1
        self.deletions.running += 1
        try:
            return await self._delete_network(str(req.get("NetworkID", "")))
        finally:
            self.deletions.running -= 1

    async def _delete_network(self, network_id: str) -> dict[str, Any]:
        subnet = self._subnets.pop(network_id, None)
        if subnet is None:
            with contextlib.suppress(DockerError):
                found = await self.deps.docker.network(network_id)
                subs = docker_subnets(found) if found else []
                subnet = str(subs[0][0]) if subs else None
        if subnet is None:
            return {}
        net = subnet_of(subnet)
        for other in await from_controller(self.deps.controller.list_networks()):
            if subnet_of(other.get("subnet")) == net:
                if self.forget_held is not None:
                    try:
                        await self.forget_held(str(other["name"]))
                    except (ControllerError, DockerError, PluginError) as exc:
                        log.warning("network %s: held addresses not checked: %s",
                                    other["name"], exc)
                try:
                    await self.deps.controller.delete_network(str(other["name"]))
                    log.info("network %s (%s) deleted", other["name"], net)
                except ControllerError as exc:
                    # 409: containers of other hosts still use it; 403: a host may not
                    # delete networks under TLS (an operator does); it stays.
                    if exc.status not in (403, 404, 409):
                        raise PluginError(exc.detail) from exc
                    log.info("network %s kept: %s", other["name"], exc.detail)
        return {}

    # -- endpoints ----------------------------------------------------------------

    async def create_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        iface = req.get("Interface") or {}
        docker_ep = str(req.get("EndpointID", ""))
        if not iface.get("Address"):
            raise PluginError("no IPv4 address: create the network with --ipam-driver daolinet")
        ip = ipv4_of(iface["Address"])
        if ip in self.pending_moves:
            ep = await from_controller(self.deps.controller.get_container(self.pending_moves[ip]))
        else:
            found = await self.ipam.endpoint_by_ip(ip)
            if found is None:
                raise PluginError(f"address {ip} is not reserved on host {self.deps.host}")
            ep = found
        mac = str(iface.get("MacAddress") or "").lower()
        if mac and mac != ep["mac"]:
            raise PluginError(f"MAC {mac} differs from the endpoint's MAC {ep['mac']}")
        port, mtu, epid = str(ep["port"]), int(ep.get("mtu", 1500)), str(ep["id"])
        peer = peer_temp_name(epid)
        external_ids = {
            ENDPOINT_KEY: epid, CONTAINER_KEY: str(ep["name"]), DOCKER_ENDPOINT_KEY: docker_ep,
        }
        try:
            await in_thread(
                self.deps.executor, plug, self.deps.ops, port, peer, mtu, external_ids,
                lambda: self.deps.ops.tx_offload_off(peer),
            )
        except (NetlinkError, OvsError) as exc:
            raise PluginError(f"endpoint {ip}: {exc}") from exc
        self.ipam.claimed.discard(epid)
        self._plugged.add(epid)
        log.info("endpoint %s ip=%s port=%s", docker_ep[:12], ip, port)
        return {"Interface": {} if mac else {"MacAddress": ep["mac"]}}

    async def join(self, req: dict[str, Any]) -> dict[str, Any]:
        docker_ep = str(req.get("EndpointID", ""))
        found = await self.port_of(docker_ep)
        if found is None:
            raise PluginError(f"endpoint {docker_ep[:12]} is unknown on host {self.deps.host}")
        _, ids = found
        epid = ids[ENDPOINT_KEY]
        ep = await from_controller(self.deps.controller.get_container(epid))
        if str(ep["ip"]) in self.pending_moves:
            ep = await from_controller(
                self.deps.controller.relocate_container(epid, self.deps.host)
            )
            self.pending_moves.pop(str(ep["ip"]), None)
            log.info("endpoint %s (%s) moved in", ep["name"], ep["ip"])
        self._spawn(self._resolve_container(str(req.get("NetworkID", "")), docker_ep, epid))
        return {
            "InterfaceName": {"SrcName": peer_temp_name(epid), "DstPrefix": "eth"},
            "Gateway": str(ep["gateway"]),
            "StaticRoutes": [],
            "DisableGatewayService": True,
        }

    async def _resolve_container(self, network_id: str, docker_ep: str, epid: str) -> None:
        """Give the endpoint the container's Docker name and id once Docker knows them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resolve_timeout
        while loop.time() < deadline:
            try:
                for c in await self.deps.docker.containers(network_id):
                    nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
                    if any((n or {}).get("EndpointID") == docker_ep for n in nets.values()):
                        name = str((c.get("Names") or ["/"])[0]).lstrip("/")
                        info = await self._record_policy(str(c["Id"]))
                        await self._name_endpoint(epid, name, str(c["Id"]))
                        await self._record_names(epid, info, docker_ep, name)
                        return
            except DockerError as exc:
                log.debug("resolving endpoint %s: %s", docker_ep[:12], exc)
            except ControllerError as exc:
                log.warning("cannot name endpoint %s: %s", epid, exc.detail)
                return
            await asyncio.sleep(0.1)
        log.warning("container of endpoint %s not found in Docker", docker_ep[:12])

    async def _record_policy(self, docker_id: str) -> dict[str, Any] | None:
        """Keep the container's restart policy (policies.py): it decides which held
        address a request gets at the next boot.  The container's inspection, or None."""
        info = await self.deps.docker.inspect(docker_id)
        policy = ((info or {}).get("HostConfig") or {}).get("RestartPolicy") or {}
        self.policies.record(docker_id, str(policy.get("Name") or "no"))
        return info

    async def _record_names(
        self, epid: str, info: dict[str, Any] | None, docker_ep: str, name: str
    ) -> None:
        """Record the endpoint's other names (`--network-alias`, `--hostname`): other
        containers resolve them (docs/architecture.md, "Names across hosts")."""
        aliases, hostname = docker_names(info, docker_ep, name)
        if aliases or hostname:
            await self.deps.controller.update_container(epid, aliases=aliases,
                                                        hostname=hostname or "")

    async def _name_endpoint(self, epid: str, name: str, docker_id: str) -> None:
        """Name the endpoint after its container, once that name is free.

        A held address given back to another container of the network (ipam.py)
        comes with the other container's name: that name goes at once (the endpoint
        is named `docker-<id>` meanwhile) and this container's own name is waited for
        while another container here still holds it (its own resolution frees it).
        Names are what policies speak of: never two containers under one name."""
        mine = await self.deps.controller.get_container(epid)
        renamed = False
        for _ in range(NAME_ATTEMPTS):
            try:
                await self.deps.controller.update_container(epid, name=name, docker_id=docker_id)
                log.info("endpoint %s is container %s (%s)", epid, name, docker_id[:12])
                return
            except ControllerError as exc:
                if exc.status != 409:
                    raise
                detail = exc.detail
            holder = await self._holder(name)
            if holder is None:
                continue  # freed meanwhile
            if (holder.get("docker_id") == docker_id
                    and holder.get("network") != mine.get("network")):
                break  # this container's endpoint on another network has the name
            if await self._drop_own_stale(holder, mine, docker_id):
                continue
            if not renamed and mine.get("docker_id") not in (None, docker_id):
                await self.deps.controller.update_container(
                    epid, name=PROVISIONAL_PREFIX + docker_id[:12], docker_id=docker_id
                )
                renamed = True
            if holder.get("host") != self.deps.host:
                break
            await asyncio.sleep(NAME_RETRY_SECONDS)
        else:
            detail = f"container {name} already exists"
        log.warning("container %s keeps its daolinet name: %s", name, detail)
        await self.deps.controller.update_container(epid, docker_id=docker_id)

    async def _holder(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.deps.controller.get_container(name)
        except ControllerError as exc:
            if exc.status != 404:
                raise
            return None

    async def _drop_own_stale(
        self, holder: dict[str, Any], mine: dict[str, Any], docker_id: str
    ) -> bool:
        """Remove `holder` (and its port) if it is this container's own earlier
        endpoint on the same network (a container has one endpoint per network, so
        that one is stale: Docker gave it another address, e.g. it never released the
        old one), or an unused one of a container Docker no longer has, instead of
        leaving the container under a provisional name beside a stale record."""
        if holder.get("host") != self.deps.host or holder["id"] == mine["id"]:
            return False
        if holder.get("docker_id") == docker_id:
            # Its port may be a stale one from before this agent started (a reboot
            # with no DeleteEndpoint): only one plugged since, or given back, is in use.
            if (holder.get("network") != mine.get("network")
                    or str(holder["id"]) in self._plugged | self.ipam.claimed):
                return False
        elif (not holder.get("docker_id")
              or str(holder["id"]) in await self.ipam.live_endpoints()
              or await self.deps.docker.inspect(str(holder["docker_id"])) is not None):
            return False
        ports = await in_thread(self.deps.executor, self.deps.ops.ports)
        for port, ids in ports.items():
            if ids.get(ENDPOINT_KEY) == str(holder["id"]):
                await in_thread(self.deps.executor, unplug, self.deps.ops, port)
        await self.deps.controller.delete_container(str(holder["id"]))
        log.info("container %s: stale endpoint %s (%s) removed", holder.get("name"),
                 holder["id"], holder.get("ip"))
        return True

    async def delete_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        docker_ep = str(req.get("EndpointID", ""))
        found = await self.port_of(docker_ep)
        if found is None:
            return {}
        port, ids = found
        if ids.get(DOCKER_PUBLISHED_KEY):  # not revoked (a failed start): unpublish now
            try:
                await self.publisher.unpublish(port, ids)
            except PluginError as exc:
                log.warning("endpoint %s: ports not unpublished: %s", docker_ep[:12], exc)
        self._plugged.discard(ids.get(ENDPOINT_KEY, ""))
        try:
            await in_thread(self.deps.executor, unplug, self.deps.ops, port)
        except (NetlinkError, OvsError) as exc:
            raise PluginError(f"endpoint {docker_ep[:12]}: {exc}") from exc
        log.info("endpoint %s removed (port %s)", docker_ep[:12], port)
        return {}


def docker_names(
    info: dict[str, Any] | None, docker_ep: str, name: str
) -> tuple[list[str], str | None]:
    """The aliases of one endpoint and the hostname of a container, as Docker shows
    them, without the container name, Docker's own short id, the hostname among the
    aliases (Docker lists it there too), or anything that is no DNS name; at most
    MAX_ALIASES aliases."""
    info = info or {}
    short = str(info.get("Id", ""))[:12]
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    found: list[str] = []
    for net in nets.values():
        if (net or {}).get("EndpointID") == docker_ep:
            found = [str(a) for a in (net.get("Aliases") or [])]
    skip = {name.lower(), short}
    hostname = str((info.get("Config") or {}).get("Hostname") or "")
    if hostname.lower() in skip or len(hostname) > 253 or not _DNS_NAME.match(hostname):
        hostname = ""
    skip.add(hostname.lower())
    aliases = [a for a in dict.fromkeys(found)
               if a.lower() not in skip and len(a) <= 253 and _DNS_NAME.match(a)]
    return aliases[:MAX_ALIASES], hostname or None
