"""A container's move, the Docker side (hostnet/docker/move.py): what it keeps (restart
policy, limits, user, a set hostname) reaches the new host's `docker run`; what cannot
move (data in volumes or bind mounts, a second network) is refused before anything
runs, naming it; the new host takes the kept fields only within their bounds (they
were read on another host)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostnet.docker.common import PluginError
from tests.unit.hostnet.dockerworld import World, endpoint_named, run

CID = "a" * 64


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def mover(world: World) -> dict[str, Any]:
    """A container `mover` on h1's `web`, its docker inspect returned to change."""
    await world.create_network("h1", "n1", "web", "10.20.0.0/24")
    await world.run_container("h1", "n1", "mover", CID, restart="always")
    await endpoint_named(world, "mover")
    return world.docker["h1"].ctrs[CID]


def test_the_restart_policy_limits_user_and_hostname_move(world: World) -> None:
    async def go() -> None:
        info = await mover(world)
        info["HostConfig"].update({"Memory": 64 << 20, "NanoCpus": 500_000_000,
                                   "PidsLimit": 100, "CpusetCpus": "0-1",
                                   "Privileged": True, "CapAdd": ["NET_ADMIN"]})
        info["Config"].update({"User": "1000:1000", "Hostname": "web-1"})
        spec = await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
        assert spec["kept"] == {
            "restart_policy": {"Name": "always", "MaximumRetryCount": 0},
            "limits": {"Memory": 64 << 20, "NanoCpus": 500_000_000, "PidsLimit": 100},
            "cpuset_cpus": "0-1", "user": "1000:1000", "hostname": "web-1"}
        ep = world.inventory.endpoint("mover")
        await world.plugins["h2"].command("docker-run", {
            "spec": spec, "endpoint": ep.id, "ip": str(ep.ip), "mac": ep.mac})
        name, config = world.docker["h2"].runs[0]
        host = config["HostConfig"]
        assert name == "mover"
        assert host["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
        assert (host["Memory"], host["NanoCpus"], host["PidsLimit"], host["CpusetCpus"]) \
            == (64 << 20, 500_000_000, 100, "0-1")
        assert (config["User"], config["Hostname"]) == ("1000:1000", "web-1")
        # what could widen the container's rights on the new host does not move
        assert "Privileged" not in host and "CapAdd" not in host
    run(go())


def test_dockers_default_hostname_is_not_carried(world: World) -> None:
    async def go() -> None:
        info = await mover(world)
        info["Config"]["Hostname"] = CID[:12]
        spec = await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
        assert spec["kept"]["hostname"] == ""
    run(go())


@pytest.mark.parametrize(("mounts", "named"), [
    ([{"Type": "volume", "Name": "pgdata", "Destination": "/var/lib/db"}],
     "volume pgdata at /var/lib/db"),
    ([{"Type": "bind", "Source": "/srv/conf", "Destination": "/etc/app"}],
     "bind /srv/conf at /etc/app"),
])
def test_a_container_keeping_data_in_mounts_is_not_moved(
    world: World, mounts: list[dict[str, str]], named: str
) -> None:
    async def go() -> None:
        info = await mover(world)
        info["Mounts"] = mounts
        with pytest.raises(PluginError,
                           match=f"container mover cannot move: it keeps data in {named}"):
            await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
        info["Mounts"] = [{"Type": "tmpfs", "Destination": "/run"}]  # holds no data
        spec = await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
        assert spec["name"] == "mover"
    run(go())


def test_a_container_on_two_networks_is_not_moved(world: World) -> None:
    async def go() -> None:
        info = await mover(world)
        info["NetworkSettings"]["Networks"]["bridge"] = {"NetworkID": "b" * 64}
        with pytest.raises(PluginError, match=r"container mover cannot move: "
                                              r"it is on 2 networks \(bridge, web\)"):
            await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
    run(go())


def test_one_refusal_names_every_reason(world: World) -> None:
    async def go() -> None:
        info = await mover(world)
        info["NetworkSettings"]["Networks"]["bridge"] = {"NetworkID": "b" * 64}
        info["Mounts"] = [{"Type": "volume", "Name": "pgdata", "Destination": "/var/lib/db"}]
        with pytest.raises(PluginError) as refused:
            await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
        assert "on 2 networks (bridge, web)" in str(refused.value)
        assert "keeps data in volume pgdata at /var/lib/db" in str(refused.value)
    run(go())


@pytest.mark.parametrize(("kept", "field"), [
    ({"limits": {"Privileged": 1}}, "kept.limits.Privileged"),
    ({"limits": {"Memory": 2**63}}, "kept.limits.Memory"),
    ({"restart_policy": {"Name": "sometimes"}}, "kept.restart_policy.Name"),
    ({"hostname": "a b"}, "kept.hostname"),
    ({"user": "root;rm"}, "kept.user"),
    ({"cap_add": ["SYS_ADMIN"]}, "kept.cap_add"),
])
def test_the_new_host_takes_kept_fields_only_within_bounds(
    world: World, kept: dict[str, Any], field: str
) -> None:
    async def go() -> None:
        await mover(world)
        spec = await world.plugins["h1"].command("docker-inspect", {"docker_id": CID})
        spec["kept"] = kept
        ep = world.inventory.endpoint("mover")
        with pytest.raises(PluginError, match=f"move of mover: {field}"):
            await world.plugins["h2"].command("docker-run", {
                "spec": spec, "endpoint": ep.id, "ip": str(ep.ip), "mac": ep.mac})
        assert world.docker["h2"].runs == []
    run(go())
