"""A container's move between hosts, the Docker side: commands from the controller.

`docker-inspect` on the old host reads what it takes to run the container again;
`docker-run` on the new host runs it with the same address and MAC (its endpoint is
kept: IPAM and the driver see the address in `pending_moves`); `docker-remove` ends
the old one.
"""

from __future__ import annotations

from typing import Any

from hostnet.docker.common import PluginDeps, PluginError, from_docker
from hostnet.docker.engine import docker_subnets


class Mover:
    def __init__(self, deps: PluginDeps, pending_moves: dict[str, str]) -> None:
        self.deps = deps
        self.pending_moves = pending_moves  # ip -> endpoint id moving in here

    async def command(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "docker-inspect":
            return await self._inspect_for_move(str(args["docker_id"]))
        if op == "docker-run":
            return await self._run_moved(args)
        if op == "docker-remove":
            await from_docker(self.deps.docker.remove(str(args["docker_id"])))
            return {}
        raise PluginError(f"unknown command {op!r}")

    async def _inspect_for_move(self, docker_id: str) -> dict[str, Any]:
        info = await from_docker(self.deps.docker.inspect(docker_id))
        if info is None:
            raise PluginError(f"container {docker_id[:12]} not found on host {self.deps.host}")
        ours = {str(n.get("Id")): n for n in await from_docker(self.deps.docker.networks())}
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        network = next(
            ((name, ours[str(n.get("NetworkID"))]) for name, n in nets.items()
             if str((n or {}).get("NetworkID")) in ours),
            None,
        )
        if network is None:
            raise PluginError(f"container {docker_id[:12]} is on no daolinet network")
        subs = docker_subnets(network[1])
        config = info.get("Config") or {}
        return {
            "name": str(info.get("Name", "")).lstrip("/"),
            "image": config.get("Image"),
            "cmd": config.get("Cmd"),
            "entrypoint": config.get("Entrypoint"),
            "env": config.get("Env"),
            "workdir": config.get("WorkingDir") or "",
            "labels": config.get("Labels") or {},
            "port_bindings": (info.get("HostConfig") or {}).get("PortBindings") or {},
            "network": network[0],
            "subnet": str(subs[0][0]) if subs else None,
            "gateway": subs[0][1] if subs else None,
        }

    async def _run_moved(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = dict(args["spec"])
        ip, mac, epid = str(args["ip"]), str(args["mac"]), str(args["endpoint"])
        name = str(spec["network"])
        local = {str(n.get("Name")) for n in await from_docker(self.deps.docker.networks())}
        if name not in local:
            if not spec.get("subnet"):
                raise PluginError(f"network {name} has no subnet to re-create it with")
            await from_docker(
                self.deps.docker.create_network(name, str(spec["subnet"]), spec.get("gateway"))
            )
        config: dict[str, Any] = {
            "Image": spec["image"], "Cmd": spec.get("cmd"), "Entrypoint": spec.get("entrypoint"),
            "Env": spec.get("env"), "WorkingDir": spec.get("workdir", ""),
            "Labels": spec.get("labels") or {}, "MacAddress": mac,
            "HostConfig": {"NetworkMode": name, "PortBindings": spec.get("port_bindings") or {}},
            "NetworkingConfig": {
                "EndpointsConfig": {name: {"IPAMConfig": {"IPv4Address": ip}}}
            },
        }
        self.pending_moves[ip] = epid
        try:
            cid = await from_docker(self.deps.docker.run(str(spec["name"]), config))
        finally:
            self.pending_moves.pop(ip, None)
        return {"docker_id": cid}
