"""Docker's remote network driver and remote IPAM driver, served by the host agent.

Protocol: libnetwork `docs/remote.md` and `docs/ipam.md` (JSON POSTs over the unix
socket `/run/docker/plugins/daolinet.sock`).  Answers carry the content type
`application/vnd.docker.plugins.v1+json`; a refusal is `{"Err": "daolinet: ..."}`.

The plugin keeps no state of its own that a restart could lose: the controller
holds networks and endpoints, Docker holds its networks and containers, and the OVS
port of an endpoint carries the Docker endpoint id in its external_ids.

* IPAM pools are identified by their CIDR (daolinet subnets never overlap), so a
  pool id is meaningful after any restart.
* Docker passes network ids, never names.  The daolinet network is created under
  the Docker name, read from the Docker API once `docker network create` has
  finished (in the background, and at the latest when the first address of the
  network is requested).
* A container's address is reserved at the controller by `RequestAddress` under a
  provisional name (`docker-XXXXXXXXXXXX`); once the container has joined, the
  endpoint is renamed to the container's Docker name and gets its Docker id.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hostnet.agent.client import ControllerError
from hostnet.host.attach import SystemHostOps, peer_temp_name
from hostnet.host.netlink import NetlinkError
from hostnet.host.ovs import CONTAINER_KEY, ENDPOINT_KEY, OvsError, _parse_ovs_value

log = logging.getLogger(__name__)
T = TypeVar("T")

PLUGIN_NAME = "daolinet"
# Marks a Docker network the agent made (sync_networks), not a user: of two networks
# with one name, the agent's copy is the one to drop.
SYNCED_LABEL = "io.daolinet.synced"
DEFAULT_PLUGIN_SOCKET = "/run/docker/plugins/daolinet.sock"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
ADDRESS_SPACE = "daolinet"
DOCKER_ENDPOINT_KEY = "daolinet-docker-endpoint"
GATEWAY_REQUEST = "com.docker.network.gateway"
PROVISIONAL_PREFIX = "docker-"
RESOLVE_TIMEOUT = 30.0


class PluginError(Exception):
    """A refusal; Docker shows `daolinet: <message>` to the user."""


# --------------------------------------------------------------------------- Docker API


class DockerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DockerClient:
    """The few Docker Engine API calls the plugin needs (HTTP over a unix socket)."""

    def __init__(self, docker_host: str, timeout: float = 30.0) -> None:
        if not docker_host.startswith("unix://"):
            raise ValueError(f"docker host must be unix:///PATH, not {docker_host!r}")
        self.path = docker_host.removeprefix("unix://")
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=self.path),
            base_url="http://docker",
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DockerError(502, f"dockerd at {self.path} unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = str(resp.json().get("message", resp.text))
            except (ValueError, AttributeError):
                message = resp.text
            raise DockerError(resp.status_code, " ".join(message.split()))
        if not resp.content:
            return None
        return resp.json()

    async def networks(self) -> list[dict[str, Any]]:
        """The Docker networks of the daolinet driver."""
        filters = json.dumps({"driver": [PLUGIN_NAME]})
        body = await self._call("GET", "/networks", params={"filters": filters})
        return [n for n in body or [] if isinstance(n, dict)]

    async def network(self, network_id: str) -> dict[str, Any] | None:
        try:
            body = await self._call("GET", f"/networks/{quote(network_id, safe='')}")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def create_network(self, name: str, subnet: str, gateway: str | None) -> str:
        config: dict[str, Any] = {"Subnet": subnet}
        if gateway:
            config["Gateway"] = gateway
        body = await self._call("POST", "/networks/create", json={
            "Name": name, "Driver": PLUGIN_NAME, "CheckDuplicate": True,
            "IPAM": {"Driver": PLUGIN_NAME, "Config": [config]},
            "Labels": {SYNCED_LABEL: "1"},
        })
        return str(body.get("Id", ""))

    async def remove_network(self, network_id: str) -> None:
        try:
            await self._call("DELETE", f"/networks/{quote(network_id, safe='')}")
        except DockerError as exc:
            if exc.status != 404:
                raise

    async def containers(self, network_id: str) -> list[dict[str, Any]]:
        filters = json.dumps({"network": [network_id]})
        body = await self._call(
            "GET", "/containers/json", params={"all": "1", "filters": filters}
        )
        return [c for c in body or [] if isinstance(c, dict)]

    async def inspect(self, container: str) -> dict[str, Any] | None:
        try:
            body = await self._call("GET", f"/containers/{quote(container, safe='')}/json")
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def run(self, name: str, config: dict[str, Any]) -> str:
        """Create and start a container; remove it again if it does not start."""
        body = await self._call(
            "POST", "/containers/create", params={"name": name}, json=config
        )
        cid = str(body["Id"])
        try:
            await self._call("POST", f"/containers/{cid}/start")
        except BaseException:
            with contextlib.suppress(DockerError):
                await self.remove(cid)
            raise
        return cid

    async def remove(self, container: str) -> None:
        try:
            await self._call(
                "DELETE", f"/containers/{quote(container, safe='')}", params={"force": "1"}
            )
        except DockerError as exc:
            if exc.status != 404:
                raise


class DockerAPI(Protocol):
    async def networks(self) -> list[dict[str, Any]]: ...

    async def network(self, network_id: str) -> dict[str, Any] | None: ...

    async def create_network(self, name: str, subnet: str, gateway: str | None) -> str: ...

    async def remove_network(self, network_id: str) -> None: ...

    async def containers(self, network_id: str) -> list[dict[str, Any]]: ...

    async def inspect(self, container: str) -> dict[str, Any] | None: ...

    async def run(self, name: str, config: dict[str, Any]) -> str: ...

    async def remove(self, container: str) -> None: ...


class ControllerAPI(Protocol):
    async def list_networks(self) -> list[dict[str, Any]]: ...

    async def create_network(
        self, name: str, subnet: str, gateway: str | None = None
    ) -> dict[str, Any]: ...

    async def delete_network(self, name: str) -> None: ...

    async def create_container(
        self, *, name: str, network: str, host: str, ip: str | None, mac: str | None
    ) -> dict[str, Any]: ...

    async def get_container(self, name_or_id: str) -> dict[str, Any]: ...

    async def delete_container(self, name_or_id: str) -> None: ...

    async def list_containers(self, host: str) -> list[dict[str, Any]]: ...

    async def update_container(
        self, name_or_id: str, *, name: str | None = None, docker_id: str | None = None
    ) -> dict[str, Any]: ...

    async def relocate_container(self, name_or_id: str, host: str) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- host side


class PortOps(Protocol):
    """Host-side steps (synchronous, run in a worker thread)."""

    def ports(self) -> dict[str, dict[str, str]]: ...

    def create_veth(self, host_name: str, peer_name: str, mtu: int) -> None: ...

    def tx_offload_off(self, name: str) -> None: ...

    def host_side_up(self, name: str, mtu: int) -> None: ...

    def add_port(self, port: str, external_ids: dict[str, str]) -> None: ...

    def del_port(self, port: str) -> None: ...

    def delete_link(self, name: str) -> None: ...


class DockerHostOps:
    """PortOps on the real host (the attach module's steps plus two of its own)."""

    def __init__(self, base: SystemHostOps) -> None:
        self.base = base
        self.create_veth = base.create_veth
        self.host_side_up = base.host_side_up
        self.add_port = base.add_port
        self.del_port = base.del_port
        self.delete_link = base.delete_link

    def ports(self) -> dict[str, dict[str, str]]:
        """{port: external_ids} of the bridge's daolinet ports."""
        names = set(self.base.ovs.list_ports(self.base.bridge))
        if not names:
            return {}
        out = self.base.ovs.run(
            "--format=json", "--columns=name,external_ids", "list", "Interface"
        )
        try:
            table = json.loads(out)
        except json.JSONDecodeError as exc:
            raise OvsError(f"ovs-vsctl list Interface: bad JSON output: {exc}") from exc
        result: dict[str, dict[str, str]] = {}
        for row in table.get("data", []):
            name, ids = _parse_ovs_value(row[0]), _parse_ovs_value(row[1])
            if (
                isinstance(name, str) and name in names and isinstance(ids, dict)
                and ids.get(ENDPOINT_KEY)
            ):
                result[name] = {str(k): str(v) for k, v in ids.items()}
        return result

    def tx_offload_off(self, name: str) -> None:
        """`ethtool -K NAME tx off` in the host namespace; the setting survives the
        move into the container (TCP stalls on the netdev datapath otherwise)."""
        if not self.base.tx_offload_off:
            return
        cmd = ["ethtool", "-K", name, "tx", "off"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetlinkError(f"ethtool -K {name} tx off: {exc}") from exc
        if proc.returncode != 0:
            msg = " ".join(proc.stderr.split()) or f"exit code {proc.returncode}"
            raise NetlinkError(f"ethtool -K {name} tx off: {msg}")


# --------------------------------------------------------------------------- the plugin


def _subnet(value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=False)
    except ValueError:
        raise PluginError(f"subnet {value!r} is not an IPv4 CIDR") from None


def _docker_subnets(network: dict[str, Any]) -> list[tuple[ipaddress.IPv4Network, str | None]]:
    found = []
    for cfg in (network.get("IPAM") or {}).get("Config") or []:
        if isinstance(cfg, dict) and cfg.get("Subnet"):
            with contextlib.suppress(ValueError):
                net = ipaddress.IPv4Network(str(cfg["Subnet"]), strict=False)
                found.append((net, str(cfg["Gateway"]) if cfg.get("Gateway") else None))
    return found


def _ip(value: Any) -> str:
    text = str(value or "").split("/")[0]
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise PluginError(f"{value!r} is not an IPv4 address") from None


class DockerPlugin:
    def __init__(
        self,
        host: str,
        controller: ControllerAPI,
        docker: DockerAPI,
        ops: PortOps,
        *,
        executor: Executor | None = None,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        self.host = host
        self.controller = controller
        self.docker = docker
        self.ops = ops
        self.executor = executor
        self.resolve_timeout = resolve_timeout
        self.pending_moves: dict[str, str] = {}  # ip -> endpoint id moving in here
        self._subnets: dict[str, str] = {}  # Docker network id -> subnet (cache)
        self._known_networks: set[str] = set()  # the controller's, at the last sync
        self._lock = asyncio.Lock()  # network creation at the controller
        self._tasks: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "Plugin.Activate": self.activate,
            "NetworkDriver.GetCapabilities": self.capabilities,
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": self.empty_value,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.empty,
            "NetworkDriver.DiscoverNew": self.empty,
            "NetworkDriver.DiscoverDelete": self.empty,
            "NetworkDriver.ProgramExternalConnectivity": self.empty,
            "NetworkDriver.RevokeExternalConnectivity": self.empty,
            "NetworkDriver.AllocateNetwork": self.empty,
            "NetworkDriver.FreeNetwork": self.empty,
            "IpamDriver.GetCapabilities": self.ipam_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.empty,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    # -- plumbing -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

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

    async def _controller(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except ControllerError as exc:
            raise PluginError(exc.detail) from exc

    async def _docker(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except DockerError as exc:
            raise PluginError(exc.message) from exc

    async def _port_of(self, docker_endpoint: str) -> tuple[str, dict[str, str]] | None:
        ports = await self._run(self.ops.ports)
        for port, ids in sorted(ports.items()):
            if ids.get(DOCKER_ENDPOINT_KEY) == docker_endpoint:
                return port, ids
        return None

    async def _endpoint_by_ip(self, ip: str) -> dict[str, Any] | None:
        for ep in await self._controller(self.controller.list_containers(self.host)):
            if str(ep.get("ip")) == ip:
                return ep
        return None

    # -- handshake ----------------------------------------------------------------

    async def activate(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    async def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        # Data scope "local": each Docker engine keeps its own record of the network
        # (there is no Docker cluster store); connectivity is global, and the
        # controller is what makes the network one network on every host.
        return {"Scope": "local", "ConnectivityScope": "global"}

    async def ipam_capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"RequiresMACAddress": False}

    async def address_spaces(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    async def empty(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def empty_value(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"Value": {}}

    # -- networks -----------------------------------------------------------------

    async def request_pool(self, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("V6"):
            raise PluginError("IPv6 is not supported")
        if not req.get("Pool"):
            raise PluginError(
                "give the network a subnet: docker network create -d daolinet "
                "--ipam-driver daolinet --subnet CIDR NAME"
            )
        if req.get("SubPool"):
            raise PluginError("--ip-range is not supported: the whole subnet is the pool")
        text = str(req["Pool"])
        try:
            net = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise PluginError(f"subnet {text} is not a valid IPv4 CIDR: {exc}") from None
        local = [
            (n, sub) for n in await self._docker(self.docker.networks())
            for sub, _ in _docker_subnets(n)
        ]
        for other in await self._controller(self.controller.list_networks()):
            sub = _subnet(other.get("subnet"))
            if not net.overlaps(sub):
                continue
            # The same subnet is the same daolinet network, joined from this engine,
            # unless this engine already has a network on it.
            if sub == net and not any(s == net for _, s in local):
                continue
            raise PluginError(f"subnet {net} overlaps network {other.get('name')} ({sub})")
        for docker_net, sub in local:
            if net.overlaps(sub):
                raise PluginError(
                    f"subnet {net} overlaps network {docker_net.get('Name')} ({sub})"
                )
        return {"PoolID": str(net), "Pool": str(net), "Data": {}}

    async def create_network(self, req: dict[str, Any]) -> dict[str, Any]:
        data = [d for d in req.get("IPv4Data") or [] if isinstance(d, dict)]
        if not data or data[0].get("AddressSpace") != ADDRESS_SPACE:
            raise PluginError(
                "daolinet networks need the daolinet IPAM driver: add --ipam-driver daolinet"
            )
        if req.get("IPv6Data"):
            raise PluginError("IPv6 is not supported")
        network_id = str(req.get("NetworkID", ""))
        subnet = str(_subnet(data[0].get("Pool")))
        self._subnets[network_id] = subnet
        self._spawn(self._bind_network(network_id, subnet))
        return {}

    async def _bind_network(self, network_id: str, subnet: str) -> None:
        """Once Docker lists the new network, create it at the controller by name."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resolve_timeout
        while loop.time() < deadline:
            try:
                if await self.docker.network(network_id) is not None:
                    await self.network_for_subnet(_subnet(subnet))
                    return
            except (DockerError, PluginError) as exc:
                log.warning("network %s (%s): %s", network_id[:12], subnet, exc)
                return
            await asyncio.sleep(0.1)
        log.warning("network %s did not show up in Docker", network_id[:12])

    async def network_for_subnet(self, net: ipaddress.IPv4Network) -> dict[str, Any]:
        """The controller's network of `net`, created from the Docker network if new."""
        async with self._lock:
            for other in await self._controller(self.controller.list_networks()):
                if _subnet(other.get("subnet")) == net:
                    return other
            for docker_net in await self._docker(self.docker.networks()):
                for sub, gateway in _docker_subnets(docker_net):
                    if sub == net:
                        name = str(docker_net.get("Name"))
                        created = await self._controller(
                            self.controller.create_network(name, str(net), gateway)
                        )
                        log.info("network %s (%s) created for Docker", name, net)
                        return created
        raise PluginError(f"no daolinet network has subnet {net}")

    async def delete_network(self, req: dict[str, Any]) -> dict[str, Any]:
        network_id = str(req.get("NetworkID", ""))
        subnet = self._subnets.pop(network_id, None)
        if subnet is None:
            with contextlib.suppress(DockerError):
                found = await self.docker.network(network_id)
                subs = _docker_subnets(found) if found else []
                subnet = str(subs[0][0]) if subs else None
        if subnet is None:
            return {}
        net = _subnet(subnet)
        for other in await self._controller(self.controller.list_networks()):
            if _subnet(other.get("subnet")) == net:
                try:
                    await self.controller.delete_network(str(other["name"]))
                    log.info("network %s (%s) deleted", other["name"], net)
                except ControllerError as exc:
                    # 409: containers of other hosts still use it; it stays.
                    if exc.status not in (404, 409):
                        raise PluginError(exc.detail) from exc
                    log.info("network %s kept: %s", other["name"], exc.detail)
        return {}

    # -- addresses ----------------------------------------------------------------

    async def request_address(self, req: dict[str, Any]) -> dict[str, Any]:
        net = _subnet(req.get("PoolID"))
        options = req.get("Options") or {}
        wanted = _ip(req["Address"]) if req.get("Address") else None
        if options.get("RequestAddressType") == GATEWAY_REQUEST:
            if wanted is None:
                wanted = str(net.network_address + 1)
                for other in await self._controller(self.controller.list_networks()):
                    if _subnet(other.get("subnet")) == net:
                        wanted = str(other.get("gateway"))
            return {"Address": f"{wanted}/{net.prefixlen}", "Data": {}}
        network = await self.network_for_subnet(net)
        if wanted is not None and wanted in self.pending_moves:
            return {"Address": f"{wanted}/{net.prefixlen}", "Data": {}}
        ep = await self._controller(self.controller.create_container(
            name=PROVISIONAL_PREFIX + uuid.uuid4().hex[:12], network=str(network["name"]),
            host=self.host, ip=wanted, mac=None,
        ))
        log.info("address %s reserved (endpoint %s)", ep["ip"], ep["id"])
        return {"Address": f"{ep['ip']}/{net.prefixlen}", "Data": {}}

    async def release_address(self, req: dict[str, Any]) -> dict[str, Any]:
        ip = _ip(req.get("Address"))
        if ip in self.pending_moves:
            return {}
        ep = await self._endpoint_by_ip(ip)
        if ep is not None:
            try:
                await self.controller.delete_container(str(ep["id"]))
            except ControllerError as exc:
                if exc.status != 404:
                    raise PluginError(exc.detail) from exc
            log.info("address %s released (endpoint %s)", ip, ep["name"])
        return {}

    # -- endpoints ----------------------------------------------------------------

    async def create_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        iface = req.get("Interface") or {}
        docker_ep = str(req.get("EndpointID", ""))
        if not iface.get("Address"):
            raise PluginError("no IPv4 address: create the network with --ipam-driver daolinet")
        ip = _ip(iface["Address"])
        if ip in self.pending_moves:
            ep = await self._controller(self.controller.get_container(self.pending_moves[ip]))
        else:
            found = await self._endpoint_by_ip(ip)
            if found is None:
                raise PluginError(f"address {ip} is not reserved on host {self.host}")
            ep = found
        mac = str(iface.get("MacAddress") or "").lower()
        if mac and mac != ep["mac"]:
            raise PluginError(f"MAC {mac} differs from the endpoint's MAC {ep['mac']}")
        port, mtu, epid = str(ep["port"]), int(ep.get("mtu", 1500)), str(ep["id"])
        peer = peer_temp_name(epid)
        try:
            await self._run(self.ops.create_veth, port, peer, mtu)
            try:
                await self._run(self.ops.tx_offload_off, peer)
                await self._run(self.ops.host_side_up, port, mtu)
                await self._run(self.ops.add_port, port, {
                    ENDPOINT_KEY: epid, CONTAINER_KEY: str(ep["name"]),
                    DOCKER_ENDPOINT_KEY: docker_ep,
                })
            except BaseException:
                with contextlib.suppress(NetlinkError, OvsError):
                    await self._run(self.ops.del_port, port)
                with contextlib.suppress(NetlinkError):
                    await self._run(self.ops.delete_link, port)
                raise
        except (NetlinkError, OvsError) as exc:
            raise PluginError(f"endpoint {ip}: {exc}") from exc
        log.info("endpoint %s ip=%s port=%s", docker_ep[:12], ip, port)
        return {"Interface": {} if mac else {"MacAddress": ep["mac"]}}

    async def join(self, req: dict[str, Any]) -> dict[str, Any]:
        docker_ep = str(req.get("EndpointID", ""))
        found = await self._port_of(docker_ep)
        if found is None:
            raise PluginError(f"endpoint {docker_ep[:12]} is unknown on host {self.host}")
        _, ids = found
        epid = ids[ENDPOINT_KEY]
        ep = await self._controller(self.controller.get_container(epid))
        if str(ep["ip"]) in self.pending_moves:
            ep = await self._controller(self.controller.relocate_container(epid, self.host))
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
                for c in await self.docker.containers(network_id):
                    nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
                    if any((n or {}).get("EndpointID") == docker_ep for n in nets.values()):
                        name = str((c.get("Names") or ["/"])[0]).lstrip("/")
                        await self._name_endpoint(epid, name, str(c["Id"]))
                        return
            except DockerError as exc:
                log.debug("resolving endpoint %s: %s", docker_ep[:12], exc)
            except ControllerError as exc:
                log.warning("cannot name endpoint %s: %s", epid, exc.detail)
                return
            await asyncio.sleep(0.1)
        log.warning("container of endpoint %s not found in Docker", docker_ep[:12])

    async def _name_endpoint(self, epid: str, name: str, docker_id: str) -> None:
        try:
            await self.controller.update_container(epid, name=name, docker_id=docker_id)
        except ControllerError as exc:
            if exc.status != 409:
                raise
            log.warning("container %s keeps its daolinet name: %s", name, exc.detail)
            await self.controller.update_container(epid, docker_id=docker_id)
        log.info("endpoint %s is container %s (%s)", epid, name, docker_id[:12])

    async def delete_endpoint(self, req: dict[str, Any]) -> dict[str, Any]:
        docker_ep = str(req.get("EndpointID", ""))
        found = await self._port_of(docker_ep)
        if found is None:
            return {}
        port, _ = found
        try:
            await self._run(self.ops.del_port, port)
            await self._run(self.ops.delete_link, port)
        except (NetlinkError, OvsError) as exc:
            raise PluginError(f"endpoint {docker_ep[:12]}: {exc}") from exc
        log.info("endpoint %s removed (port %s)", docker_ep[:12], port)
        return {}

    # -- reconciliation after a restart -------------------------------------------

    async def reconcile(self) -> None:
        """Forget endpoints whose Docker container is gone; name unnamed ones."""
        endpoints = await self.controller.list_containers(self.host)
        ports = await self._run(self.ops.ports)
        by_endpoint = {ids[ENDPOINT_KEY]: (port, ids) for port, ids in ports.items()}
        for ep in endpoints:
            epid = str(ep["id"])
            docker_id = ep.get("docker_id")
            port_ids = by_endpoint.get(epid)
            if docker_id:
                if await self.docker.inspect(str(docker_id)) is not None:
                    continue
            elif not str(ep.get("name", "")).startswith(PROVISIONAL_PREFIX):
                continue  # not a Docker container
            elif port_ids is not None and DOCKER_ENDPOINT_KEY in port_ids[1]:
                continue  # a live Docker endpoint still waiting for its name
            if port_ids is not None:
                await self._run(self.ops.del_port, port_ids[0])
                await self._run(self.ops.delete_link, port_ids[0])
            with contextlib.suppress(ControllerError):
                await self.controller.delete_container(epid)
            log.info("removed stale Docker endpoint %s (%s)", ep.get("name"), ep.get("ip"))

    # -- networks are global: every engine has every daolinet network --------------

    async def sync_networks(self) -> None:
        """Make this engine's daolinet networks those the controller has.

        Docker 20.10 has no global scope without a cluster store, so the agent does
        it: a network made on any engine (or with daolictl) is created in every
        other engine, and `docker run --network NAME` works on every host. A local
        network whose daolinet network went away (seen there before, gone now) is
        removed once no local container uses it; one just created here and not yet
        at the controller is left alone.
        """
        networks = await self._controller(self.controller.list_networks())
        wanted = {str(n["name"]): n for n in networks}
        local = await self._drop_duplicate_networks(await self._docker(self.docker.networks()))
        for name, net in wanted.items():
            if name in local:
                continue
            try:
                await self._docker(self.docker.create_network(
                    name, str(net["subnet"]), str(net.get("gateway") or "") or None
                ))
                log.info("network %s (%s) created in the local Docker engine", name, net["subnet"])
            except PluginError as exc:
                log.warning("network %s not created in the local Docker engine: %s", name, exc)
        for name, docker_net in local.items():
            if name in wanted or name not in self._known_networks:
                continue
            docker_id = str(docker_net.get("Id"))
            if await self._docker(self.docker.containers(docker_id)):
                continue
            await self._docker(self.docker.remove_network(docker_id))
            log.info("network %s removed from the local Docker engine (gone at the controller)",
                     name)
        self._known_networks = set(wanted)

    async def _drop_duplicate_networks(
        self, networks: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """This engine's daolinet networks by name, one each.

        Docker 20.10's CheckDuplicate is best effort: a `docker network create` racing
        the agent's own (a user making on this host a network that another host made a
        moment before) can leave two networks of one name, and then `--network NAME`
        is ambiguous. The copies the agent made go, unless a container uses them.
        """
        by_name: dict[str, list[dict[str, Any]]] = {}
        for net in networks:
            by_name.setdefault(str(net.get("Name")), []).append(net)
        local: dict[str, dict[str, Any]] = {}
        for name, nets in by_name.items():
            kept = [n for n in nets if SYNCED_LABEL not in (n.get("Labels") or {})]
            for net in (n for n in nets if SYNCED_LABEL in (n.get("Labels") or {})):
                docker_id = str(net.get("Id"))
                if not kept:
                    kept.append(net)  # no user's network of that name: this one stays
                    continue
                if await self._docker(self.docker.containers(docker_id)):
                    kept.append(net)  # in use: it stays
                    continue
                await self._docker(self.docker.remove_network(docker_id))
                log.info("network %s: removed the agent's duplicate %s", name, docker_id[:12])
            local[name] = kept[0]
        return local

    # -- commands from the controller (container move) -----------------------------

    async def command(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "docker-inspect":
            return await self._inspect_for_move(str(args["docker_id"]))
        if op == "docker-run":
            return await self._run_moved(args)
        if op == "docker-remove":
            await self._docker(self.docker.remove(str(args["docker_id"])))
            return {}
        raise PluginError(f"unknown command {op!r}")

    async def _inspect_for_move(self, docker_id: str) -> dict[str, Any]:
        info = await self._docker(self.docker.inspect(docker_id))
        if info is None:
            raise PluginError(f"container {docker_id[:12]} not found on host {self.host}")
        ours = {str(n.get("Id")): n for n in await self._docker(self.docker.networks())}
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        network = next(
            ((name, ours[str(n.get("NetworkID"))]) for name, n in nets.items()
             if str((n or {}).get("NetworkID")) in ours),
            None,
        )
        if network is None:
            raise PluginError(f"container {docker_id[:12]} is on no daolinet network")
        subs = _docker_subnets(network[1])
        config = info.get("Config") or {}
        return {
            "name": str(info.get("Name", "")).lstrip("/"),
            "image": config.get("Image"),
            "cmd": config.get("Cmd"),
            "entrypoint": config.get("Entrypoint"),
            "env": config.get("Env"),
            "workdir": config.get("WorkingDir") or "",
            "labels": config.get("Labels") or {},
            "network": network[0],
            "subnet": str(subs[0][0]) if subs else None,
            "gateway": subs[0][1] if subs else None,
        }

    async def _run_moved(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = dict(args["spec"])
        ip, mac, epid = str(args["ip"]), str(args["mac"]), str(args["endpoint"])
        name = str(spec["network"])
        local = {str(n.get("Name")) for n in await self._docker(self.docker.networks())}
        if name not in local:
            if not spec.get("subnet"):
                raise PluginError(f"network {name} has no subnet to re-create it with")
            await self._docker(
                self.docker.create_network(name, str(spec["subnet"]), spec.get("gateway"))
            )
        config: dict[str, Any] = {
            "Image": spec["image"], "Cmd": spec.get("cmd"), "Entrypoint": spec.get("entrypoint"),
            "Env": spec.get("env"), "WorkingDir": spec.get("workdir", ""),
            "Labels": spec.get("labels") or {}, "MacAddress": mac,
            "HostConfig": {"NetworkMode": name},
            "NetworkingConfig": {
                "EndpointsConfig": {name: {"IPAMConfig": {"IPv4Address": ip}}}
            },
        }
        self.pending_moves[ip] = epid
        try:
            cid = await self._docker(self.docker.run(str(spec["name"]), config))
        finally:
            self.pending_moves.pop(ip, None)
        return {"docker_id": cid}


# --------------------------------------------------------------------------- HTTP app


def _answer(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=CONTENT_TYPE)


def create_plugin_app(plugin: DockerPlugin) -> FastAPI:
    app = FastAPI(title="daolinet Docker plugin", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.post("/{method}")
    async def call(method: str, request: Request) -> JSONResponse:
        handler = plugin.handlers.get(method)
        if handler is None:
            return _answer({"Err": f"{PLUGIN_NAME}: unknown method {method}"}, 404)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return _answer({"Err": f"{PLUGIN_NAME}: request body is not JSON"}, 400)
        if not isinstance(body, dict):
            body = {}
        try:
            return _answer(await handler(body))
        except PluginError as exc:
            log.info("%s refused: %s", method, exc)
            return _answer({"Err": f"{PLUGIN_NAME}: {exc}"}, 500)
        except Exception as exc:  # a bug: one line to Docker, the trace to our log
            log.exception("%s failed", method)
            return _answer({"Err": f"{PLUGIN_NAME}: {type(exc).__name__}: {exc}"}, 500)

    return app
