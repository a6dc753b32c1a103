"""The Docker network/IPAM plugin against the real controller API (in process) and
fake Docker engine and host ops."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.desired.errors import Conflict
from controller.desired.events import Change, EndpointAdded, EndpointRemoved
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from hostnet.agent.client import ControllerClient
from hostnet.docker.common import DOCKER_ENDPOINT_KEY
from hostnet.docker.engine import SYNCED_LABEL, DockerError
from hostnet.docker.plugin import CONTENT_TYPE, DockerPlugin, create_plugin_app
from hostnet.host.ports import peer_temp_name
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

    async def create_network(self, name: str, subnet: str, gateway: str | None) -> str:
        """The agent's create (DockerClient labels its networks)."""
        nid = f"net-{name}"
        self.add_network(nid, name, subnet, gateway, labels={SYNCED_LABEL: "1"})
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
        self.plugins = {h: self._plugin(h) for h in ("h1", "h2")}

    def _plugin(self, host: str) -> DockerPlugin:
        client = ControllerClient("http://ctl", TOKEN, transport=httpx.ASGITransport(self.app))
        return DockerPlugin(host, client, self.docker[host], self.ops[host], resolve_timeout=2)

    async def call(self, host: str, method: str, body: dict[str, Any] | None = None
                   ) -> tuple[int, dict[str, Any], str]:
        app = create_plugin_app(self.plugins[host])
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
                            restart: str = "no") -> dict[str, Any]:
        subnet = self.docker[host].nets[nid]["IPAM"]["Config"][0]["Subnet"]
        addr = await self.ok(host, "IpamDriver.RequestAddress",
                             {"PoolID": subnet, "Address": ip or "", "Options": {}})
        dep = dep or f"ep-{cid}"  # Docker's endpoint id
        created = await self.ok(host, "NetworkDriver.CreateEndpoint", {
            "NetworkID": nid, "EndpointID": dep, "Interface": {"Address": addr["Address"]}})
        joined = await self.ok(host, "NetworkDriver.Join", {
            "NetworkID": nid, "EndpointID": dep, "SandboxKey": "/x"})
        self.docker[host].add_container(cid, name, nid, dep, restart)
        return {"address": addr["Address"], "created": created, "joined": joined}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_handshake_and_content_type(world: World):
    async def go():
        status, body, ctype = await world.call("h1", "Plugin.Activate")
        assert (status, body) == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
        assert ctype == CONTENT_TYPE
        assert (await world.ok("h1", "NetworkDriver.GetCapabilities")) == \
            {"Scope": "local", "ConnectivityScope": "global"}
        spaces = await world.ok("h1", "IpamDriver.GetDefaultAddressSpaces")
        assert spaces["LocalDefaultAddressSpace"] == "daolinet"
        status, body, _ = await world.call("h1", "NetworkDriver.Nonsense")
        assert status == 404
    run(go())


def test_network_is_created_under_the_docker_name(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        for _ in range(50):
            if world.inventory.index.network("web"):
                break
            await asyncio.sleep(0.05)
        net = world.inventory.network("web")
        assert str(net.subnet) == "10.20.0.0/24" and str(net.gateway) == "10.20.0.1"
        # the same subnet from another engine joins; an overlap is refused
        await world.ok("h2", "IpamDriver.RequestPool", {"Pool": "10.20.0.0/24"})
        status, body, _ = await world.call("h1", "IpamDriver.RequestPool",
                                           {"Pool": "10.20.0.0/25"})
        assert status == 500
        assert body == {"Err": "daolinet: subnet 10.20.0.0/25 overlaps network web "
                               "(10.20.0.0/24)"}
        # this engine already has a network on that subnet
        status, body, _ = await world.call("h1", "IpamDriver.RequestPool",
                                           {"Pool": "10.20.0.0/24"})
        assert body["Err"].startswith("daolinet: subnet 10.20.0.0/24 overlaps network web")
        _, body, _ = await world.call("h1", "IpamDriver.RequestPool", {"Pool": ""})
        assert "give the network a subnet" in body["Err"]
        # the controller's rules of subnets (docs/security.md, "Validation")
        for pool, why in (("127.0.0.0/8", "overlaps the loopback range 127.0.0.0/8"),
                          ("0.0.0.0/0", "is too large: use /8 or smaller")):
            _, body, _ = await world.call("h1", "IpamDriver.RequestPool", {"Pool": pool})
            assert body == {"Err": f"daolinet: subnet {pool} {why}"}
        _, body, _ = await world.call("h1", "NetworkDriver.CreateNetwork", {
            "NetworkID": "x", "IPv4Data": [{"AddressSpace": "LocalDefault",
                                            "Pool": "10.9.0.0/24"}]})
        assert "--ipam-driver daolinet" in body["Err"]
        await world.ok("h1", "NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
        assert world.inventory.index.network("web") is None
    run(go())


def test_container_lifecycle(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        out = await world.run_container("h1", "n1", "c1", "a" * 64)
        assert out["address"] == "10.20.0.2/24"
        ep = world.inventory.endpoints()[0]
        assert out["created"] == {"Interface": {"MacAddress": "02:da:0a:14:00:02"}}
        assert out["joined"]["InterfaceName"] == {"SrcName": peer_temp_name(ep.id),
                                                  "DstPrefix": "eth"}
        assert out["joined"]["Gateway"] == "10.20.0.1"
        ops = world.ops["h1"]
        names = [c[0] for c in ops.calls]
        assert names == ["veth", "tx_off", "up", "add_port"]
        assert ops.calls[1] == ("tx_off", peer_temp_name(ep.id))  # before Docker moves it
        assert ops.port_ids[ep.port][DOCKER_ENDPOINT_KEY] == "ep-" + "a" * 64
        for _ in range(50):  # the name comes from the Docker API after the join
            if world.inventory.index.endpoint("c1"):
                break
            await asyncio.sleep(0.05)
        named = world.inventory.endpoint("c1")
        assert named.docker_id == "a" * 64 and named.id == ep.id
        assert world.inventory.endpoint("a" * 12).id == ep.id  # Docker short id
        # fixed IP taken: Docker's text
        _, body, _ = await world.call("h1", "IpamDriver.RequestAddress",
                                      {"PoolID": "10.20.0.0/24", "Address": "10.20.0.2"})
        assert body == {"Err": "daolinet: ip 10.20.0.2 is already used by container c1"}
        # stop/rm: DeleteEndpoint then ReleaseAddress
        await world.ok("h1", "NetworkDriver.Leave", {"NetworkID": "n1", "EndpointID": "x"})
        await world.ok("h1", "NetworkDriver.DeleteEndpoint",
                       {"NetworkID": "n1", "EndpointID": "ep-" + "a" * 64})
        assert ops.port_ids == {} and ep.port not in ops.links
        await world.ok("h1", "IpamDriver.ReleaseAddress",
                       {"PoolID": "10.20.0.0/24", "Address": "10.20.0.2"})
        assert [e.id for e in world.inventory.endpoints()] == [ep.id]  # held: it exists
        world.docker["h1"].ctrs.clear()  # docker rm
        await world.plugins["h1"].reconcile(held_only=True)
        assert world.inventory.endpoints() == []
        out = await world.run_container("h1", "n1", "c9", "b" * 64, ip="10.20.0.2")
        assert out["address"] == "10.20.0.2/24"  # reused
    run(go())


async def named(world: World, name: str) -> Any:
    for _ in range(100):
        if world.inventory.index.endpoint(name):
            return world.inventory.endpoint(name)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no endpoint named {name}")


async def stop(world: World, host: str, cid: str, ip: str) -> None:
    """What dockerd does when a container stops (also for each container of the
    previous run when it starts again): DeleteEndpoint, then ReleaseAddress."""
    await world.ok(host, "NetworkDriver.DeleteEndpoint",
                   {"NetworkID": "n1", "EndpointID": f"ep-{cid}"})
    await world.ok(host, "IpamDriver.ReleaseAddress",
                   {"PoolID": "10.20.0.0/24", "Address": ip})


def test_a_restarted_container_keeps_its_address_endpoint_and_name(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        await world.run_container("h1", "n1", "c2", "b" * 64)
        e1, e2 = await named(world, "c1"), await named(world, "c2")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        assert world.ops["h1"].port_ids.keys() == {e2.port}
        # while it is stopped, a new container gets a new address
        out = await world.run_container("h1", "n1", "c3", "d" * 64, ip="10.20.0.9")
        assert out["address"] == "10.20.0.9/24"
        # started again (no --ip): its address, endpoint, MAC and name come back
        world.docker["h1"].ctrs.pop("a" * 64)
        out = await world.run_container("h1", "n1", "c1", "a" * 64)
        assert out["address"] == "10.20.0.2/24"
        assert out["created"] == {"Interface": {"MacAddress": e1.mac}}
        await asyncio.sleep(0.3)
        again = world.inventory.endpoint("c1")
        assert (again.id, again.ip, again.port, again.docker_id) == (e1.id, e1.ip, e1.port,
                                                                      "a" * 64)
        assert len(world.inventory.endpoints()) == 3
        assert world.plugins["h1"].ipam.claimed == set()
    run(go())


def test_held_addresses_given_to_each_other_never_swap_names(world: World):
    """A host's boot: both containers' addresses are held, and Docker does not say
    which container asks; whichever address each gets, each endpoint ends under the
    name of the container that uses it."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        await world.run_container("h1", "n1", "c2", "b" * 64)
        e1, e2 = await named(world, "c1"), await named(world, "c2")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        await stop(world, "h1", "b" * 64, str(e2.ip))
        docker = world.docker["h1"]
        docker.ctrs.clear()
        await world.run_container("h1", "n1", "c2", "b" * 64)  # gets c1's address
        await world.run_container("h1", "n1", "c1", "a" * 64)
        for _ in range(100):
            got = {e.name: e for e in world.inventory.endpoints()}
            if set(got) == {"c1", "c2"}:
                break
            await asyncio.sleep(0.05)
        assert got["c2"].docker_id == "b" * 64 and got["c1"].docker_id == "a" * 64
        ports = world.ops["h1"].port_ids
        assert ports[got["c2"].port][DOCKER_ENDPOINT_KEY] == "ep-" + "b" * 64
        assert ports[got["c1"].port][DOCKER_ENDPOINT_KEY] == "ep-" + "a" * 64
    run(go())


def test_a_stale_endpoint_of_the_container_goes_and_its_name_comes_back(world: World):
    """Docker never released the old address (no plugin when it cleaned up): the
    container gets a new one, its old record goes and it keeps its name."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        e1 = await named(world, "c1")
        assert world.ops["h1"].port_ids[e1.port][DOCKER_ENDPOINT_KEY]  # never unplugged
        world.docker["h1"].ctrs.clear()
        world.plugins["h1"] = world._plugin("h1")  # the host's agent started again
        out = await world.run_container("h1", "n1", "c1", "a" * 64, dep="ep-new")
        assert out["address"] == "10.20.0.3/24"
        for _ in range(100):
            if world.inventory.index.endpoint("c1") and \
                    world.inventory.endpoint("c1").id != e1.id:
                break
            await asyncio.sleep(0.05)
        [only] = world.inventory.endpoints()
        assert (only.name, only.docker_id, str(only.ip)) == ("c1", "a" * 64, "10.20.0.3")
        assert e1.port not in world.ops["h1"].port_ids
    run(go())


def test_held_address_of_a_container_off_the_network_goes(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        e1 = await named(world, "c1")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        await world.plugins["h1"].reconcile(held_only=True)
        assert world.inventory.endpoint("c1").id == e1.id  # still on web: held
        world.docker["h1"].ctrs["a" * 64]["NetworkSettings"]["Networks"].clear()
        await world.plugins["h1"].reconcile(held_only=True)  # docker network disconnect
        assert world.inventory.endpoints() == []
    run(go())


def test_unexpected_failure_is_one_line(world: World):
    async def boom() -> list[dict[str, Any]]:
        raise RuntimeError("kaputt\nsecond line")

    world.docker["h1"].networks = boom  # type: ignore[method-assign]

    async def go():
        status, body, _ = await world.call("h1", "IpamDriver.RequestPool",
                                           {"Pool": "10.1.0.0/24"})
        assert status == 500 and body["Err"].startswith("daolinet: RuntimeError: kaputt")
    run(go())


def test_docker_errors_become_plugin_errors(world: World):
    async def down() -> list[dict[str, Any]]:
        raise DockerError(502, "dockerd at /x unreachable")

    world.docker["h1"].networks = down  # type: ignore[method-assign]

    async def go():
        _, body, _ = await world.call("h1", "IpamDriver.RequestPool", {"Pool": "10.1.0.0/24"})
        assert body == {"Err": "daolinet: dockerd at /x unreachable"}
    run(go())


def test_move_relocates_at_join(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "mover", "a" * 64)
        for _ in range(50):
            if world.inventory.index.endpoint("mover"):
                break
            await asyncio.sleep(0.05)
        ep = world.inventory.endpoint("mover")
        spec = await world.plugins["h1"].command("docker-inspect", {"docker_id": "a" * 64})
        assert (spec["name"], spec["network"], spec["subnet"], spec["env"]) == \
            ("mover", "web", "10.20.0.0/24", ["A=1"])
        h2 = world.docker["h2"]
        hosts_seen: list[str] = []

        async def docker_runs_it(name: str, config: dict[str, Any]) -> None:
            # what dockerd on h2 does: network create (done), IPAM, endpoint, join
            nid = next(iter(h2.nets))
            await world.run_container("h2", nid, name, "c" * 64,
                                      ip=config["NetworkingConfig"]["EndpointsConfig"]["web"]
                                      ["IPAMConfig"]["IPv4Address"])
            hosts_seen.append(world.inventory.endpoint(ep.id).host)

        h2.on_run = docker_runs_it
        world.changes.clear()
        result = await world.plugins["h2"].command("docker-run", {
            "spec": spec, "endpoint": ep.id, "ip": str(ep.ip), "mac": ep.mac})
        assert result == {"docker_id": "c" * 64}
        assert "web" in {n["Name"] for n in h2.nets.values()}  # created on h2
        assert h2.runs[0][1]["MacAddress"] == ep.mac
        assert hosts_seen == ["h2"]
        moved = world.inventory.endpoint(ep.id)
        assert (moved.host, moved.ip, moved.mac, moved.port) == ("h2", ep.ip, ep.mac, ep.port)
        assert [type(c) for c in world.changes] == [EndpointRemoved, EndpointAdded]
        assert world.plugins["h2"].pending_moves == {}
        # the old container goes; its ReleaseAddress leaves the moved endpoint alone
        await world.plugins["h1"].command("docker-remove", {"docker_id": "a" * 64})
        await world.ok("h1", "NetworkDriver.DeleteEndpoint",
                       {"NetworkID": "n1", "EndpointID": "ep-" + "a" * 64})
        await world.ok("h1", "IpamDriver.ReleaseAddress",
                       {"PoolID": "10.20.0.0/24", "Address": str(ep.ip)})
        assert world.inventory.endpoint(ep.id).host == "h2"
        assert world.ops["h1"].port_ids == {}
    run(go())


def test_reconcile_removes_endpoints_of_gone_containers(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        for _ in range(50):
            if world.inventory.index.endpoint("c1"):
                break
            await asyncio.sleep(0.05)
        world.docker["h1"].ctrs.clear()  # dockerd lost it while the agent was down
        await world.plugins["h1"].reconcile()
        assert world.inventory.endpoints() == []
        assert world.ops["h1"].port_ids == {}
    run(go())


def test_inventory_update_relocate_and_docker_id_lookup(world: World):
    inv = world.inventory
    inv.create_network("web", "10.1.0.0/24")
    a = inv.add_endpoint("a", "web", "h1")
    inv.add_endpoint("b", "web", "h1")
    inv.update_endpoint(a.id, name="a2", docker_id="f" * 64)
    assert inv.endpoint("a2").id == a.id and inv.index.endpoint("a") is None
    assert inv.endpoint("f" * 12).id == a.id
    with pytest.raises(Conflict):
        inv.update_endpoint(a.id, name="b")
    world.changes.clear()
    moved = inv.relocate_endpoint("a2", "h2")
    assert moved.host == "h2" and moved.ip == ipaddress.IPv4Address("10.1.0.2")
    assert inv.index.endpoint_by_port("h2", a.port) is not None
    assert inv.index.endpoint_by_port("h1", a.port) is None
    assert [type(c) for c in world.changes] == [EndpointRemoved, EndpointAdded]


def test_every_engine_gets_every_daolinet_network(world: World):
    """Networks are global: made on h1's engine (or with daolictl), they appear in
    h2's engine; gone at the controller, they leave h2's engine once unused."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        for _ in range(50):
            if world.inventory.index.network("web"):
                break
            await asyncio.sleep(0.05)
        world.inventory.create_network("ops", "10.21.0.0/24")  # made with daolictl
        h2 = world.docker["h2"]
        await world.plugins["h2"].sync_networks()
        names = {n["Name"]: n["IPAM"]["Config"][0] for n in h2.nets.values()}
        assert names == {"web": {"Subnet": "10.20.0.0/24", "Gateway": "10.20.0.1"},
                         "ops": {"Subnet": "10.21.0.0/24", "Gateway": "10.21.0.1"}}
        # h1 already has web; it only gains ops
        await world.plugins["h1"].sync_networks()
        assert sorted(n["Name"] for n in world.docker["h1"].nets.values()) == ["ops", "web"]
        # A network of this engine not yet at the controller (just created) stays.
        h2.add_network("n-new", "fresh", "10.22.0.0/24")
        await world.plugins["h2"].sync_networks()
        assert "n-new" in h2.nets
        # Gone at the controller: removed where unused, kept where a container uses it.
        h2.add_container("c1", "c1", "net-web", "ep1")
        world.inventory.delete_network("ops")
        world.inventory.delete_network("web")
        await world.plugins["h2"].sync_networks()
        assert sorted(n["Name"] for n in h2.nets.values()) == ["fresh", "web"]
    run(go())


def test_a_duplicate_the_agent_made_goes(world: World):
    """A user's `docker network create` racing the agent's (Docker's CheckDuplicate
    is best effort) leaves two networks of one name: the agent's unused copy goes,
    the user's stays; an agent copy in use stays too."""
    async def go():
        world.inventory.create_network("web", "10.20.0.0/24")
        world.inventory.create_network("ops", "10.21.0.0/24")
        h2 = world.docker["h2"]
        await world.plugins["h2"].sync_networks()
        assert {n["Id"] for n in h2.nets.values()} == {"net-web", "net-ops"}
        h2.add_network("user-web", "web", "10.20.0.0/24", "10.20.0.1")  # the race
        h2.add_network("user-ops", "ops", "10.21.0.0/24", "10.21.0.1")
        h2.add_container("c1", "c1", "net-ops", "ep1")  # the agent's ops copy is used
        await world.plugins["h2"].sync_networks()
        assert sorted(h2.nets) == ["net-ops", "user-ops", "user-web"]
        await world.plugins["h2"].sync_networks()  # nothing more to do, nothing re-made
        assert sorted(h2.nets) == ["net-ops", "user-ops", "user-web"]
    run(go())


def test_a_network_removed_during_a_sync_is_not_made_again(world: World):
    """A `docker network rm` that ends while the sync runs (the driver deleted the
    network at the controller, Docker dropped it from its list): the sync must not
    create the network again in this engine."""
    async def go():
        world.inventory.create_network("scratch", "10.23.0.0/24")
        h1 = world.docker["h1"]
        await world.plugins["h1"].sync_networks()
        assert [n["Name"] for n in h1.nets.values()] == ["scratch"]

        async def networks_after_rm() -> list[dict[str, Any]]:
            # the user's rm completes just before this read: the driver deleted the
            # network at the controller, then Docker dropped it from its list
            world.inventory.delete_network("scratch")
            h1.nets.clear()
            return []

        h1.networks = networks_after_rm  # type: ignore[method-assign]
        await world.plugins["h1"].sync_networks()
        assert h1.nets == {}
    run(go())


def test_a_held_address_given_back_is_not_freed_under_its_new_container(world: World):
    """`docker rm` of a stopped container, then `docker run` of another one that is
    given its held address: the check that frees addresses of removed containers
    leaves that one alone once it is given back (claimed, then plugged)."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        e1 = await named(world, "c1")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        world.docker["h1"].ctrs.clear()  # docker rm
        addr = await world.ok("h1", "IpamDriver.RequestAddress",
                              {"PoolID": "10.20.0.0/24", "Address": "", "Options": {}})
        assert addr["Address"] == "10.20.0.2/24"
        await world.plugins["h1"].reconcile(held_only=True)  # claimed: stays
        await world.ok("h1", "NetworkDriver.CreateEndpoint", {
            "NetworkID": "n1", "EndpointID": "ep-n", "Interface": {"Address": addr["Address"]}})
        await world.plugins["h1"].reconcile(held_only=True)  # plugged: stays
        assert [e.id for e in world.inventory.endpoints()] == [e1.id]
        assert world.ops["h1"].port_ids[e1.port][DOCKER_ENDPOINT_KEY] == "ep-n"
    run(go())


def test_at_a_boot_containers_with_a_restart_policy_get_their_held_addresses_first(
        world: World, tmp_path: Path):
    """A host's power loss: dockerd gives every address back, then restarts only the
    containers with a restart policy (its API silent meanwhile).  The policy, read when
    the container joined and kept on disk, makes the restarted one get its own address,
    not the lower one of a container that stays stopped."""
    async def go():
        world.plugins["h1"] = DockerPlugin("h1", world.plugins["h1"].ipam.deps.controller,
                                           world.docker["h1"], world.ops["h1"],
                                           resolve_timeout=2, state_dir=tmp_path / "state")
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "idle", "a" * 64)
        await world.run_container("h1", "n1", "keep", "b" * 64, restart="always")
        idle, keep = await named(world, "idle"), await named(world, "keep")
        for _ in range(50):  # the policy is recorded before the name
            if (tmp_path / "state" / "restart-policies.json").exists():
                break
            await asyncio.sleep(0.05)
        await stop(world, "h1", "a" * 64, str(idle.ip))
        await stop(world, "h1", "b" * 64, str(keep.ip))
        # the agent starts again with the host: the policies come from its state dir
        world.plugins["h1"] = DockerPlugin("h1", world.plugins["h1"].ipam.deps.controller,
                                           world.docker["h1"], world.ops["h1"],
                                           resolve_timeout=2, state_dir=tmp_path / "state")
        assert world.plugins["h1"].policies.restarts_at_boot("b" * 64)
        world.docker["h1"].ctrs.pop("b" * 64)
        out = await world.run_container("h1", "n1", "keep", "b" * 64, dep="ep-boot",
                                         restart="always")
        assert out["address"] == f"{keep.ip}/24" and str(keep.ip) > str(idle.ip)
        # a gone container's policy is forgotten
        world.docker["h1"].ctrs.clear()
        await world.plugins["h1"].reconcile(held_only=True)
        assert world.inventory.index.endpoint("idle") is None
        assert not world.plugins["h1"].policies.restarts_at_boot("a" * 64)
    run(go())


def test_restart_policies_file(tmp_path: Path):
    from hostnet.docker.policies import RestartPolicies
    p = RestartPolicies(tmp_path / "s")
    p.record("a" * 64, "always")
    p.record("b" * 64, "no")
    again = RestartPolicies(tmp_path / "s")
    assert again.restarts_at_boot("a" * 64) and not again.restarts_at_boot("b" * 64)
    again.keep_only({"b" * 64})
    assert not RestartPolicies(tmp_path / "s").restarts_at_boot("a" * 64)
    (tmp_path / "s" / "restart-policies.json").write_text("[1]")
    assert not RestartPolicies(tmp_path / "s").restarts_at_boot("b" * 64)  # unreadable: empty
