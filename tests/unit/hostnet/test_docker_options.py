"""The Docker plugin's `-p`, `--mac-address`, `--aux-address`, `--internal` and `-o`
against the real controller API (in process), fake Docker engines and host ops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hostnet.docker.common import DOCKER_PUBLISHED_KEY
from hostnet.docker.engine import SYNCED_LABEL
from hostnet.docker.publish import PORTMAP, bindings_of
from tests.unit.hostnet.dockerworld import World, endpoint_named, run

TCP, UDP = 6, 17


def binding(port: int, host_port: int = 0, end: int = 0, proto: int = TCP,
            host_ip: str = "") -> dict[str, Any]:
    """A libnetwork types.PortBinding as Docker sends it (Go's JSON)."""
    return {"Proto": proto, "IP": "", "Port": port, "HostIP": host_ip,
            "HostPort": host_port, "HostPortEnd": end}


async def started(world: World, host: str, name: str, cid: str, *bindings: dict[str, Any],
                  nid: str = "n1") -> tuple[int, dict[str, Any]]:
    """`docker run -p ...`: the endpoint, its join, then ProgramExternalConnectivity."""
    await world.run_container(host, nid, name, cid)
    status, body, _ = await world.call(host, "NetworkDriver.ProgramExternalConnectivity", {
        "NetworkID": nid, "EndpointID": f"ep-{cid}",
        "Options": {PORTMAP: list(bindings),
                    "com.docker.network.endpoint.exposedports": []}})
    return status, body


async def web(world: World, host: str = "h1") -> None:
    await world.create_network(host, "n1", "web", "10.20.0.0/24")
    for _ in range(500):
        if world.inventory.index.network("web"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("network web never made at the controller")


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def test_publish_follows_the_container(world: World) -> None:
    """-p 8081:7000 -p 53:53/udp: published under the provisional name, carried to the
    Docker name, unpublished at RevokeExternalConnectivity (container stop)."""
    async def go() -> None:
        await web(world)
        status, body = await started(world, "h1", "w1", "a" * 64,
                                     binding(7000, 8081), binding(53, 5353, proto=UDP))
        assert (status, body) == (200, {})
        await endpoint_named(world, "w1")
        ports = world.inventory.published_ports("w1")
        assert sorted((p.protocol, p.host_port, p.container_port) for p in ports) == [
            ("tcp", 8081, 7000), ("udp", 5353, 53)]
        ep = world.inventory.endpoint("w1")
        recorded = world.ops["h1"].port_ids[ep.port][DOCKER_PUBLISHED_KEY]
        assert sorted(recorded.split(",")) == sorted(p.id for p in ports)
        await world.ok("h1", "NetworkDriver.RevokeExternalConnectivity",
                       {"NetworkID": "n1", "EndpointID": "ep-" + "a" * 64})
        assert world.inventory.published_ports() == []
        assert DOCKER_PUBLISHED_KEY not in world.ops["h1"].port_ids[ep.port]
        # a port published with daolictl for the same container is not Docker's to take
        kept = world.inventory.publish_port("w1", 9000, 90)
        await world.ok("h1", "NetworkDriver.RevokeExternalConnectivity",
                       {"NetworkID": "n1", "EndpointID": "ep-" + "a" * 64})
        assert world.inventory.published_ports() == [kept]
    run(go())


def test_conflicting_host_port_is_refused_by_name(world: World) -> None:
    async def go() -> None:
        await web(world)
        assert (await started(world, "h1", "w1", "a" * 64, binding(7000, 8081)))[0] == 200
        await endpoint_named(world, "w1")
        status, body = await started(world, "h1", "w2", "b" * 64,
                                     binding(80, 8082), binding(7000, 8081))
        assert (status, body) == (500, {"Err": "daolinet: host port 8081/tcp on host h1 is "
                                               "already published for container w1"})
        # all or none: 8082 of the refused container went again
        assert [p.host_port for p in world.inventory.published_ports()] == [8081]
        # the same host port on another host is free
        await world.plugins["h2"].sync_networks()
        nid = next(iter(world.docker["h2"].nets))
        assert (await started(world, "h2", "w3", "c" * 64, binding(7000, 8081),
                              nid=nid))[0] == 200
        # a port a process of the host holds
        world.busy.add(("tcp", 8083))
        status, body = await started(world, "h1", "w4", "d" * 64, binding(7000, 8083))
        assert body == {"Err": "daolinet: host port 8083/tcp on host h1 is in use by a "
                               "process of the host"}
    run(go())


def test_ranges_and_ports_docker_leaves_to_the_driver(world: World) -> None:
    async def go() -> None:
        await web(world)
        world.inventory.add_endpoint("other", "web", "h1")
        world.inventory.publish_port("other", 8081, 1)
        world.busy.add(("tcp", 8082))
        world.busy.add(("tcp", 49153))
        assert (await started(world, "h1", "w1", "a" * 64,
                              binding(7000, 8081, 8090), binding(7001))) == (200, {})
        await endpoint_named(world, "w1")
        got = sorted(p.host_port for p in world.inventory.published_ports("w1"))
        assert got == [8083, 49154]  # the first free of 8081-8090, the first ephemeral one
        _, body = await started(world, "h1", "w2", "b" * 64, binding(7000, 8083, 8083))
        assert "host port 8083/tcp on host h1 is already published for container w1" \
            in body["Err"]
    run(go())


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (binding(7000, 8081, host_ip="127.0.0.1"),
         "-p 127.0.0.1:...:7000: daolinet publishes on every address of the host, not on "
         "one; leave the address out"),
        (binding(7000, 8081, proto=132), "-p 7000: protocol 132 is not published, only tcp "
                                         "and udp"),
        (binding(70000, 8081), f"{PORTMAP}: Port 70000 is not a port number"),
        (binding(7000, -1), f"{PORTMAP}: HostPort -1 is not a port number"),
        ({"Proto": TCP, "Port": "7000"}, f"{PORTMAP}: Port '7000' is not a port number"),
    ],
)
def test_bindings_refused(world: World, item: dict[str, Any], message: str) -> None:
    async def go() -> None:
        await web(world)
        status, body = await started(world, "h1", "w1", "a" * 64, item)
        assert (status, body) == (500, {"Err": f"daolinet: {message}"})
        assert world.inventory.published_ports() == []
    run(go())


def test_bindings_of_wildcards_and_duplicates() -> None:
    found = bindings_of({PORTMAP: [binding(1, 2, host_ip="0.0.0.0"), binding(1, 2),
                                   binding(1, 2, host_ip="::")]})
    assert [str(b) for b in found] == ["2:1/tcp"]
    assert bindings_of({}) == []


def test_internal_network_publishes_nothing(world: World) -> None:
    """--internal: the daolinet network is made internal (Docker's record says so), so
    nothing is published even if asked (Docker itself does not ask on such a network)."""
    async def go() -> None:
        await world.create_network("h1", "n1", "quiet", "10.20.0.0/24")
        world.docker["h1"].nets["n1"]["Internal"] = True
        await world.ok("h1", "IpamDriver.RequestAddress", {  # the first container
            "PoolID": "10.20.0.0/24", "Address": "",
            "Options": {"com.docker.network.endpoint.macaddress": "02:42:00:00:00:01"}})
        assert world.inventory.network("quiet").internal is True
        await world.plugins["h2"].sync_networks()
        assert [n["Internal"] for n in world.docker["h2"].nets.values()] == [True]
        status, body = await started(world, "h1", "q1", "a" * 64, binding(7000, 8081))
        assert status == 500 and "on internal network quiet, which publishes no ports" \
            in body["Err"]
    run(go())


def test_driver_options(world: World) -> None:
    """-o: Docker's MTU option is honoured, any other is refused by name."""
    async def go() -> None:
        data = [{"AddressSpace": "daolinet", "Pool": "10.20.0.0/24", "Gateway": "10.20.0.1/24"}]
        for opts, err in (
            ({"color": "blue"}, "unknown option -o color: daolinet networks take only "
                                "-o com.docker.network.driver.mtu=N"),
            ({"com.docker.network.driver.mtu": "100"},
             "-o com.docker.network.driver.mtu=100: the MTU must be 576-9000"),
        ):
            status, body, _ = await world.call("h1", "NetworkDriver.CreateNetwork", {
                "NetworkID": "x", "IPv4Data": data,
                "Options": {"com.docker.network.generic": opts,
                            "com.docker.network.enable_ipv6": False}})
            assert (status, body) == (500, {"Err": f"daolinet: {err}"})
        _, body, _ = await world.call("h1", "IpamDriver.RequestPool",
                                      {"Pool": "10.20.0.0/24", "Options": {"x": "1"}})
        assert body == {"Err": "daolinet: unknown option --ipam-opt x: the daolinet IPAM "
                               "takes none"}
        await world.ok("h1", "NetworkDriver.CreateNetwork", {
            "NetworkID": "n1", "IPv4Data": data,
            "Options": {"com.docker.network.generic": {"com.docker.network.driver.mtu":
                                                       "1400"}}})
        world.docker["h1"].add_network("n1", "web", "10.20.0.0/24")
        world.docker["h1"].nets["n1"]["Options"] = {"com.docker.network.driver.mtu": "1400"}
        await world.run_container("h1", "n1", "w1", "a" * 64)
        assert world.inventory.network("web").mtu == 1400
        assert world.ops["h1"].calls[0][1][2] == 1400  # the veth's MTU
    run(go())


def test_mac_address_and_aux_addresses(world: World) -> None:
    async def go() -> None:
        # --aux-address: asked for before CreateNetwork, with no options
        for ip in ("10.20.0.2", "10.20.0.3"):
            out = await world.ok("h1", "IpamDriver.RequestAddress",
                                 {"PoolID": "10.20.0.0/24", "Address": ip})
            assert out["Address"] == f"{ip}/24"
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        cfg = world.docker["h1"].nets["n1"]["IPAM"]["Config"][0]
        cfg["AuxiliaryAddresses"] = {"a": "10.20.0.2", "b": "10.20.0.3"}
        out = await world.run_container("h1", "n1", "w1", "a" * 64, mac="02:42:de:ad:be:ef")
        assert out["address"] == "10.20.0.4/24"  # the aux addresses are never given
        assert [str(a) for a in world.inventory.network("web").reserved] == \
            ["10.20.0.2", "10.20.0.3"]
        assert world.inventory.endpoints()[0].mac == "02:42:de:ad:be:ef"  # --mac-address
        _, body, _ = await world.call("h1", "IpamDriver.RequestAddress", {
            "PoolID": "10.20.0.0/24", "Address": "10.20.0.2",
            "Options": {"com.docker.network.endpoint.macaddress": "02:42:00:00:00:07"}})
        assert body == {"Err": "daolinet: ip 10.20.0.2 is reserved on network web"}
        # another engine's copy carries them; an aux address the network lacks is refused
        await world.plugins["h2"].sync_networks()
        aux = next(iter(world.docker["h2"].nets.values()))["IPAM"]["Config"][0]
        assert sorted(aux["AuxiliaryAddresses"].values()) == ["10.20.0.2", "10.20.0.3"]
        _, body, _ = await world.call("h2", "IpamDriver.RequestAddress",
                                      {"PoolID": "10.20.0.0/24", "Address": "10.20.0.9"})
        assert body == {"Err": "daolinet: --aux-address 10.20.0.9 is not reserved on network "
                               "web (10.20.0.0/24), which exists already"}
        # a MAC another container has
        _, body, _ = await world.call("h1", "IpamDriver.RequestAddress", {
            "PoolID": "10.20.0.0/24", "Address": "",
            "Options": {"com.docker.network.endpoint.macaddress": "02:42:de:ad:be:ef"}})
        assert "mac 02:42:de:ad:be:ef is already used by container" in body["Err"]
    run(go())


def test_a_moved_container_keeps_its_published_ports(world: World) -> None:
    """`daolictl container move`: the new container is run with the old one's
    PortBindings; the new host adopts the published port, the old host only forgets it
    when its container goes."""
    async def go() -> None:
        await web(world)
        assert (await started(world, "h1", "mover", "a" * 64, binding(7000, 8081)))[0] == 200
        await endpoint_named(world, "mover")
        world.docker["h1"].ctrs["a" * 64]["HostConfig"] = {
            "PortBindings": {"7000/tcp": [{"HostIp": "", "HostPort": "8081"}]}}
        (port,) = world.inventory.published_ports("mover")
        ep = world.inventory.endpoint("mover")
        spec = await world.plugins["h1"].command("docker-inspect", {"docker_id": "a" * 64})
        h2 = world.docker["h2"]

        async def docker_runs_it(name: str, config: dict[str, Any]) -> None:
            assert config["HostConfig"]["PortBindings"] == spec["port_bindings"]
            nid = next(iter(h2.nets))
            await world.run_container("h2", nid, name, "c" * 64, ip=str(ep.ip), mac=ep.mac)
            status, body, _ = await world.call("h2", "NetworkDriver.ProgramExternalConnectivity", {
                "NetworkID": nid, "EndpointID": "ep-" + "c" * 64,
                "Options": {PORTMAP: [binding(7000, 8081)]}})
            assert (status, body) == (200, {})

        h2.on_run = docker_runs_it
        await world.plugins["h2"].command("docker-run", {
            "spec": spec, "endpoint": ep.id, "ip": str(ep.ip), "mac": ep.mac})
        assert world.inventory.published_ports("mover") == [port]  # the same one
        assert world.inventory.index.published_port(8081, "tcp", "h2") == port
        assert world.ops["h2"].port_ids[ep.port][DOCKER_PUBLISHED_KEY] == port.id
        # the old container stops on h1: Docker revokes there, the port stays
        await world.ok("h1", "NetworkDriver.RevokeExternalConnectivity",
                       {"NetworkID": "n1", "EndpointID": "ep-" + "a" * 64})
        await world.ok("h1", "NetworkDriver.DeleteEndpoint",
                       {"NetworkID": "n1", "EndpointID": "ep-" + "a" * 64})
        assert world.inventory.published_ports("mover") == [port]
    run(go())


def test_labels_go_to_every_engine(world: World) -> None:
    """--label: kept at the controller, so the other engines' copies carry them (what
    Compose checks on a network it finds)."""
    async def go() -> None:
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        world.docker["h1"].nets["n1"]["Labels"] = {
            "com.docker.compose.network": "web", "com.docker.compose.project": "shop"}
        await world.run_container("h1", "n1", "w1", "a" * 64)
        assert world.inventory.network("web").labels == {
            "com.docker.compose.network": "web", "com.docker.compose.project": "shop"}
        await world.plugins["h2"].sync_networks()
        (copy,) = world.docker["h2"].nets.values()
        assert copy["Labels"] == {"com.docker.compose.network": "web",
                                  "com.docker.compose.project": "shop",
                                  SYNCED_LABEL: "1"}
    run(go())
