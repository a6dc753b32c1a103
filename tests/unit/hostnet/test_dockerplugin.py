"""The Docker network/IPAM plugin against the real controller API (in process) and
fake Docker engine and host ops (dockerworld.py)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from controller.desired.errors import Conflict
from controller.desired.events import EndpointAdded, EndpointRemoved, EndpointRenamed
from hostnet.docker.common import DOCKER_ENDPOINT_KEY
from hostnet.docker.engine import DockerError
from hostnet.docker.plugin import CONTENT_TYPE
from hostnet.host.ports import peer_temp_name
from tests.unit.hostnet.dockerworld import World, endpoint_named, network_made, run


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
        await network_made(world, "web")
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
        assert out["created"] == {"Interface": {}}  # Docker's MAC, which the endpoint has
        assert ep.mac == "02:42:aa:aa:aa:aa"
        assert out["joined"]["InterfaceName"] == {"SrcName": peer_temp_name(ep.id),
                                                  "DstPrefix": "eth"}
        assert out["joined"]["Gateway"] == "10.20.0.1"
        ops = world.ops["h1"]
        names = [c[0] for c in ops.calls]
        assert names == ["veth", "tx_off", "up", "add_port"]
        assert ops.calls[1] == ("tx_off", peer_temp_name(ep.id))  # before Docker moves it
        assert ops.port_ids[ep.port][DOCKER_ENDPOINT_KEY] == "ep-" + "a" * 64
        await endpoint_named(world, "c1")  # the name comes from the Docker API after the join
        named = world.inventory.endpoint("c1")
        assert named.docker_id == "a" * 64 and named.id == ep.id
        assert world.inventory.endpoint("a" * 12).id == ep.id  # Docker short id
        # fixed IP taken: Docker's text
        _, body, _ = await world.call("h1", "IpamDriver.RequestAddress", {
            "PoolID": "10.20.0.0/24", "Address": "10.20.0.2",
            "Options": {"com.docker.network.endpoint.macaddress": "02:42:00:00:00:09"}})
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
        await endpoint_named(world, "mover")
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
                                      ["IPAMConfig"]["IPv4Address"], mac=config["MacAddress"])
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
        await endpoint_named(world, "c1")
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
        await network_made(world, "web")
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


def test_a_network_whose_rm_is_in_the_driver_during_a_sync_is_not_made_again(world: World):
    """Docker hides a network it is deleting before it calls DeleteNetwork: a sync that
    reads this engine then (no network) and the controller before the driver deleted
    it there (still one) makes no network; the next sync decides."""
    async def go():
        await world.create_network("h1", "n1", "scratch", "10.23.0.0/24")
        await network_made(world, "scratch")
        h1, plugin = world.docker["h1"], world.plugins["h1"]
        h1.nets.clear()  # being deleted: Docker no longer lists it
        controller = plugin.reconciler.deps.controller
        list_networks = controller.list_networks

        async def listed_as_the_rm_reaches_the_driver() -> list[dict[str, Any]]:
            controller.list_networks = list_networks  # type: ignore[method-assign]
            listed = await list_networks()  # still there
            await world.ok("h1", "NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
            return listed

        controller.list_networks = (  # type: ignore[method-assign]
            listed_as_the_rm_reaches_the_driver)
        await plugin.sync_networks()
        assert h1.nets == {}
        assert world.inventory.index.network("scratch") is None
    run(go())


def test_network_rm_after_an_agent_restart_deletes_the_daolinet_network(world: World):
    """DeleteNetwork names only Docker's network id, and Docker hides a network it is
    deleting: an agent started after the network was made learns its subnet from the
    network sync, so `docker network rm` still deletes the daolinet network."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await network_made(world, "web")
        world.plugins["h1"] = world._plugin("h1")  # the agent restarted
        await world.plugins["h1"].sync_networks()
        del world.docker["h1"].nets["n1"]  # being deleted: Docker no longer lists it
        await world.ok("h1", "NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
        assert world.inventory.index.network("web") is None
    run(go())


def test_aliases_hostname_and_renames_are_recorded(world: World):
    """After the join the endpoint gets the container's aliases and hostname (what
    other containers resolve); a `docker rename` renames its endpoints."""
    async def scenario() -> None:
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        cid = "b" * 64
        await world.run_container("h1", "n1", "w1", cid)
        ctr = world.docker["h1"].ctrs[cid]  # before the background naming reads it
        ctr["NetworkSettings"]["Networks"]["web"]["Aliases"] = ["api", "box1", cid[:12]]
        ctr["Config"]["Hostname"] = "box1"
        await endpoint_named(world, "w1")
        for _ in range(200):
            if world.inventory.endpoint("w1").aliases:
                break
            await asyncio.sleep(0.05)
        ep = world.inventory.endpoint("w1")
        assert (ep.aliases, ep.hostname) == (("api",), "box1")
        world.changes.clear()
        await world.plugins["h1"].container_renamed(cid, "w2")
        assert world.inventory.endpoint(ep.id).name == "w2"
        assert [type(c) for c in world.changes] == [EndpointRenamed]
        await world.plugins["h1"].container_renamed("c" * 64, "zz")  # not ours: nothing
        assert world.inventory.index.endpoint("zz") is None

    run(scenario())
