"""What the Docker plugin's unit tests share: a controller (real API, in process), fake
Docker engines and host ops, one plugin per host (World)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from hostnet.agent.client import ControllerClient
from hostnet.agent.metrics.instruments import AgentMetrics
from hostnet.docker.engine import MTU_OPTION, SYNCED_LABEL
from hostnet.docker.plugin import DockerPlugin, create_plugin_app
from tests.unit.fakes import FakeRuntime

TOKEN = "t0ken"


class FakeDocker:
    """A Docker engine's networks and containers, as the plugin reads them."""

    def __init__(self) -> None:
        self.nets: dict[str, dict[str, Any]] = {}
        self.ctrs: dict[str, dict[str, Any]] = {}
        self.runs: list[tuple[str, dict[str, Any]]] = []
        self.removed: list[str] = []

    def add_network(self, nid: str, name: str, subnet: str, gateway: str | None = None,
                    labels: dict[str, str] | None = None) -> None:
        cfg = {"Subnet": subnet} | ({"Gateway": gateway} if gateway else {})
        self.nets[nid] = {"Id": nid, "Name": name, "IPAM": {"Config": [cfg]},
                          "Labels": labels or {}}

    def add_container(self, cid: str, name: str, nid: str, docker_ep: str,
                      restart: str = "no") -> None:
        self.ctrs[cid] = {
            "Id": cid, "Names": [f"/{name}"], "Name": f"/{name}",
            "HostConfig": {"RestartPolicy": {"Name": restart, "MaximumRetryCount": 0}},
            "Config": {"Image": "img", "Cmd": ["sleep", "9"], "Entrypoint": None,
                       "Env": ["A=1"], "WorkingDir": "", "Labels": {}},
            "NetworkSettings": {"Networks": {self.nets[nid]["Name"]: {
                "NetworkID": nid, "EndpointID": docker_ep}}},
        }

    async def networks(self) -> list[dict[str, Any]]:
        return list(self.nets.values())

    async def network(self, network_id: str) -> dict[str, Any] | None:
        return self.nets.get(network_id)

    async def create_network(self, name: str, subnet: str, gateway: str | None, *,
                             mtu: int | None = None, internal: bool = False,
                             aux: Sequence[str] = (), labels: dict[str, str] | None = None,
                             ) -> str:
        """The agent's create (DockerClient labels its networks)."""
        nid = f"net-{name}"
        self.add_network(nid, name, subnet, gateway,
                         labels=(labels or {}) | {SYNCED_LABEL: "1"})
        self.nets[nid]["Internal"] = internal
        self.nets[nid]["Options"] = {MTU_OPTION: str(mtu)} if mtu else {}
        if aux:
            self.nets[nid]["IPAM"]["Config"][0]["AuxiliaryAddresses"] = {
                f"a{i}": a for i, a in enumerate(aux)}
        return nid

    async def containers(self, network_id: str) -> list[dict[str, Any]]:
        return [c for c in self.ctrs.values()
                if any(n["NetworkID"] == network_id
                       for n in c["NetworkSettings"]["Networks"].values())]

    async def inspect(self, container: str) -> dict[str, Any] | None:
        return self.ctrs.get(container)

    async def run(self, name: str, config: dict[str, Any]) -> str:
        self.runs.append((name, config))
        if self.on_run is not None:
            await self.on_run(name, config)
        return "c" * 64

    on_run: Any = None

    async def remove(self, container: str) -> None:
        self.removed.append(container)
        self.ctrs.pop(container, None)

    async def remove_network(self, network_id: str) -> None:
        self.nets.pop(network_id, None)


class FakeOps:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.port_ids: dict[str, dict[str, str]] = {}
        self.links: set[str] = set()

    def ports(self) -> dict[str, dict[str, str]]:
        return {p: dict(ids) for p, ids in self.port_ids.items()}

    def create_veth(self, host_name: str, peer_name: str, mtu: int) -> None:
        self.calls.append(("veth", (host_name, peer_name, mtu)))
        self.links |= {host_name, peer_name}

    def tx_offload_off(self, name: str) -> None:
        self.calls.append(("tx_off", name))

    def set_port_ids(self, port: str, external_ids: dict[str, str]) -> None:
        ids = self.port_ids[port]
        ids.update({k: v for k, v in external_ids.items() if v})
        for key in [k for k, v in external_ids.items() if not v]:
            ids.pop(key, None)

    def link_exists(self, name: str) -> bool:
        return name in self.links

    def host_side_up(self, name: str, mtu: int) -> None:
        self.calls.append(("up", name))

    def add_port(self, port: str, external_ids: dict[str, str]) -> None:
        self.calls.append(("add_port", port))
        self.port_ids[port] = dict(external_ids)

    def del_port(self, port: str) -> None:
        self.calls.append(("del_port", port))
        self.port_ids.pop(port, None)

    def delete_link(self, name: str) -> None:
        self.calls.append(("del_link", name))
        self.links.discard(name)


class World:
    """A controller (real API, in process) and one plugin per host."""

    def __init__(self, tmp: Path) -> None:
        self.changes: list[Change] = []
        self.inventory = Inventory(SqliteStore(str(tmp / "s.db")), self.changes.append)
        for i, host in enumerate(("h1", "h2"), start=1):
            self.inventory.register_host(host, f"198.18.0.{10 + i}")
        ctx = ApiContext(inventory=self.inventory, token=TOKEN, runtime=FakeRuntime(),
                         openflow_host="127.0.0.1", openflow_port=6653)
        self.app = create_app(ctx)
        self.docker = {h: FakeDocker() for h in ("h1", "h2")}
        self.ops = {h: FakeOps() for h in ("h1", "h2")}
        self.busy: set[tuple[str, int]] = set()  # (protocol, port) a host process holds
        self.plugins = {h: self._plugin(h) for h in ("h1", "h2")}
        self.metrics = {h: AgentMetrics() for h in ("h1", "h2")}  # the plugin's requests

    def _plugin(self, host: str) -> DockerPlugin:
        client = ControllerClient("http://ctl", TOKEN, transport=httpx.ASGITransport(self.app))
        return DockerPlugin(host, client, self.docker[host], self.ops[host], resolve_timeout=2,
                            port_in_use=lambda proto, port: (proto, port) in self.busy)

    async def call(self, host: str, method: str, body: dict[str, Any] | None = None
                   ) -> tuple[int, dict[str, Any], str]:
        app = create_plugin_app(self.plugins[host], self.metrics[host].plugin_request)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://plugin") as http:
            r = await http.post(f"/{method}", json=body or {})
        return r.status_code, r.json(), r.headers["content-type"]

    async def ok(self, host: str, method: str, body: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        status, answer, _ = await self.call(host, method, body)
        assert status == 200 and "Err" not in answer, answer
        return answer

    async def create_network(self, host: str, nid: str, name: str, subnet: str) -> None:
        pool = await self.ok(host, "IpamDriver.RequestPool",
                             {"AddressSpace": "daolinet", "Pool": subnet})
        gw = await self.ok(host, "IpamDriver.RequestAddress", {
            "PoolID": pool["PoolID"], "Options": {"RequestAddressType":
                                                  "com.docker.network.gateway"}})
        await self.ok(host, "NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "IPv4Data": [{"AddressSpace": "daolinet", "Pool": subnet,
                                            "Gateway": gw["Address"]}]})
        self.docker[host].add_network(nid, name, subnet)

    async def run_container(self, host: str, nid: str, name: str, cid: str,
                            ip: str | None = None, dep: str | None = None,
                            restart: str = "no", mac: str | None = None) -> dict[str, Any]:
        """What dockerd does for `docker run`: the IPAM is asked with the container's
        MAC (RequiresMACAddress; Docker makes one up without --mac-address)."""
        subnet = self.docker[host].nets[nid]["IPAM"]["Config"][0]["Subnet"]
        mac = mac or "02:42:" + ":".join(cid[i:i + 2] for i in range(0, 8, 2))
        addr = await self.ok(host, "IpamDriver.RequestAddress", {
            "PoolID": subnet, "Address": ip or "",
            "Options": {"com.docker.network.endpoint.macaddress": mac}})
        dep = dep or f"ep-{cid}"  # Docker's endpoint id
        created = await self.ok(host, "NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": dep,
            "Interface": {"Address": addr["Address"], "MacAddress": mac}})
        joined = await self.ok(host, "NetworkDriver.Join", {
            "NetworkID": nid, "EndpointID": dep, "SandboxKey": "/x"})
        self.docker[host].add_container(cid, name, nid, dep, restart)
        return {"address": addr["Address"], "created": created, "joined": joined}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def network_made(world: World, name: str) -> None:
    """Wait until the controller has network `name` (made in the background; up to
    10 s, for a loaded machine)."""
    for _ in range(200):
        if world.inventory.index.network(name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no network named {name}")


async def endpoint_named(world: World, name: str) -> Any:
    """The endpoint named `name`, once the background naming gave it that name (up to
    10 s, for a loaded machine)."""
    for _ in range(200):
        if world.inventory.index.endpoint(name):
            return world.inventory.endpoint(name)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no endpoint named {name}")
