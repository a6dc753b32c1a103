"""Held addresses (hostnet/docker/ipam.py): a container that stops and starts again -
also at a host's boot - keeps its address, endpoint and name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hostnet.docker.common import DOCKER_ENDPOINT_KEY
from hostnet.docker.plugin import DockerPlugin
from hostnet.docker.policies import RestartPolicies
from tests.unit.hostnet.dockerworld import World, endpoint_named, run


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def stop(world: World, host: str, cid: str, ip: str) -> None:
    """What dockerd does when a container stops (also for each container of the
    previous run when it starts again): DeleteEndpoint, then ReleaseAddress."""
    await world.ok(host, "NetworkDriver.DeleteEndpoint",
                   {"NetworkID": "n1", "EndpointID": f"ep-{cid}"})
    await world.ok(host, "IpamDriver.ReleaseAddress",
                   {"PoolID": "10.20.0.0/24", "Address": ip})


async def two_stopped(world: World) -> tuple[Any, Any]:
    """Containers c1 and c2 on network web of h1, both stopped: their endpoints."""
    await world.create_network("h1", "n1", "web", "10.20.0.0/24")
    await world.run_container("h1", "n1", "c1", "a" * 64)
    await world.run_container("h1", "n1", "c2", "b" * 64)
    e1, e2 = await endpoint_named(world, "c1"), await endpoint_named(world, "c2")
    await stop(world, "h1", "a" * 64, str(e1.ip))
    await stop(world, "h1", "b" * 64, str(e2.ip))
    return e1, e2


def test_a_restarted_container_keeps_its_address_endpoint_and_name(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        await world.run_container("h1", "n1", "c2", "b" * 64)
        e1, e2 = await endpoint_named(world, "c1"), await endpoint_named(world, "c2")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        assert world.ops["h1"].port_ids.keys() == {e2.port}
        # while it is stopped, a new container gets a new address
        out = await world.run_container("h1", "n1", "c3", "d" * 64, ip="10.20.0.9")
        assert out["address"] == "10.20.0.9/24"
        # started again (no --ip): its address, endpoint, MAC and name come back
        world.docker["h1"].ctrs.pop("a" * 64)
        out = await world.run_container("h1", "n1", "c1", "a" * 64)
        assert out["address"] == "10.20.0.2/24"
        assert out["created"] == {"Interface": {}}  # Docker's MAC is the endpoint's
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
        await two_stopped(world)
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
        e1 = await endpoint_named(world, "c1")
        assert world.ops["h1"].port_ids[e1.port][DOCKER_ENDPOINT_KEY]  # never unplugged
        world.docker["h1"].ctrs.clear()
        world.plugins["h1"] = world._plugin("h1")  # the host's agent started again
        # Docker makes the container a new MAC (one it generated is not kept, moby #47233)
        out = await world.run_container("h1", "n1", "c1", "a" * 64, dep="ep-new",
                                        mac="02:42:0a:0b:0c:0d")
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


def test_a_held_address_comes_back_with_the_new_mac_docker_made(world: World):
    """Docker generates a new MAC at every start of a container run without
    --mac-address: the address comes back on an endpoint with that MAC (CreateEndpoint
    must be given the endpoint's MAC), and the name follows."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        e1 = await endpoint_named(world, "c1")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        world.docker["h1"].ctrs.pop("a" * 64)
        out = await world.run_container("h1", "n1", "c1", "a" * 64, mac="02:42:01:02:03:04")
        assert out["address"] == f"{e1.ip}/24"
        assert out["created"] == {"Interface": {}}
        for _ in range(100):
            if world.inventory.index.endpoint("c1"):
                break
            await asyncio.sleep(0.05)
        [only] = world.inventory.endpoints()
        assert (only.name, only.ip, only.mac) == ("c1", e1.ip, "02:42:01:02:03:04")
    run(go())


def test_held_address_of_a_container_off_the_network_goes(world: World):
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        e1 = await endpoint_named(world, "c1")
        await stop(world, "h1", "a" * 64, str(e1.ip))
        await world.plugins["h1"].reconcile(held_only=True)
        assert world.inventory.endpoint("c1").id == e1.id  # still on web: held
        world.docker["h1"].ctrs["a" * 64]["NetworkSettings"]["Networks"].clear()
        await world.plugins["h1"].reconcile(held_only=True)  # docker network disconnect
        assert world.inventory.endpoints() == []
    run(go())


def test_a_held_address_given_back_is_not_freed_under_its_new_container(world: World):
    """`docker rm` of a stopped container, then `docker run` of another one that is
    given its held address: the check that frees addresses of removed containers
    leaves that one alone once it is given back (claimed, then plugged)."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "c1", "a" * 64)
        e1 = await endpoint_named(world, "c1")
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
        idle, keep = await endpoint_named(world, "idle"), await endpoint_named(world, "keep")
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
    p = RestartPolicies(tmp_path / "s")
    p.record("a" * 64, "always")
    p.record("b" * 64, "no")
    again = RestartPolicies(tmp_path / "s")
    assert again.restarts_at_boot("a" * 64) and not again.restarts_at_boot("b" * 64)
    again.keep_only({"b" * 64})
    assert not RestartPolicies(tmp_path / "s").restarts_at_boot("a" * 64)
    (tmp_path / "s" / "restart-policies.json").write_text("[1]")
    assert not RestartPolicies(tmp_path / "s").restarts_at_boot("b" * 64)  # unreadable: empty


def test_a_port_left_from_the_previous_boot_does_not_keep_the_address_in_use(world: World):
    """A boot where Docker's clean-up has not reached the plugin: Open vSwitch still
    lists the container's port (its database survives), but the veth went with the
    container's namespace.  The address counts as held, and comes back."""
    async def go():
        await world.create_network("h1", "n1", "web", "10.20.0.0/24")
        await world.run_container("h1", "n1", "keep", "a" * 64, restart="always")
        keep = await endpoint_named(world, "keep")
        world.ops["h1"].links.clear()  # the boot: every veth is gone, the ports stay
        assert keep.port in world.ops["h1"].port_ids
        world.plugins["h1"] = world._plugin("h1")
        world.docker["h1"].ctrs.clear()
        out = await world.run_container("h1", "n1", "keep", "a" * 64, dep="ep-boot",
                                        restart="always")
        assert out["address"] == f"{keep.ip}/24"
        assert world.ops["h1"].port_ids[keep.port][DOCKER_ENDPOINT_KEY] == "ep-boot"
        await asyncio.sleep(0.3)
        assert [(e.id, e.name) for e in world.inventory.endpoints()] == [(keep.id, "keep")]
    run(go())


def test_network_rm_right_after_a_container_rm_deletes_the_daolinet_network(world: World):
    """`docker rm -f c && docker network rm net`: Docker gives c's address back as it
    gives back a stopped container's, so it is held until the periodic reconcile; the
    network's DeleteNetwork forgets it first, else the controller would keep the
    network for it (and every other engine its copy).  A stopped container's held
    address is kept, and the network with it."""
    async def go():
        _, e2 = await two_stopped(world)
        docker = world.docker["h1"]
        docker.ctrs.pop("a" * 64)  # c1 removed; c2 only stopped
        await world.ok("h1", "NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
        assert world.inventory.index.endpoint("c1") is None
        assert world.inventory.endpoint("c2").id == e2.id
        assert world.inventory.index.network("web") is not None  # c2's address holds it
        docker.ctrs.clear()  # c2 removed too
        await world.ok("h1", "NetworkDriver.DeleteNetwork", {"NetworkID": "n1"})
        assert world.inventory.endpoints() == []
        assert world.inventory.index.network("web") is None
    run(go())
