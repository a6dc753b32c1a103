"""A container's move between hosts, the Docker side: commands from the controller.

`docker-inspect` on the old host reads what it takes to run the container again;
`docker-run` on the new host runs it with the same address and MAC (its endpoint is
kept: IPAM and the driver see the address in `pending_moves`); `docker-remove` ends
the old one.

What moves besides image, command, environment, working dir, labels and published
ports: the restart policy, the resource limits (memory, CPU, pids), the user and a
hostname that was set.  The new host takes those only through `Kept`, which bounds
each of them: the spec comes from another host, and a field that could widen what
the container may do on the new host (privileges, capabilities, devices, mounts) is
never carried.  What cannot move is refused before anything starts, naming it: data
in volumes or bind mounts (it would stay behind), and a container on more than one
network (its other endpoints would not follow).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hostnet.docker.common import PluginDeps, PluginError, from_docker
from hostnet.docker.engine import docker_subnets

# Docker's HostConfig keys that only limit a container: carried by a move, bounded here.
Limit = Literal["Memory", "MemoryReservation", "MemorySwap", "NanoCpus", "CpuShares",
                "CpuQuota", "CpuPeriod", "PidsLimit"]
LIMITS: tuple[Limit, ...] = get_args(Limit)
LimitValue = Annotated[int, Field(ge=-1, le=2**62)]  # -1: unlimited (swap, pids)
MOUNTS_THAT_HOLD_DATA = ("volume", "bind")


class RestartPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    Name: Literal["", "no", "always", "unless-stopped", "on-failure"] = ""
    MaximumRetryCount: int = Field(0, ge=0, le=1_000_000)


class Kept(BaseModel):
    """What a move keeps of the container's configuration beyond its command line
    (validated on the new host: it was read on another one)."""

    model_config = ConfigDict(extra="forbid")
    restart_policy: RestartPolicy = RestartPolicy(Name="", MaximumRetryCount=0)
    limits: dict[Limit, LimitValue] = Field(default_factory=dict)
    cpuset_cpus: str = Field("", max_length=64, pattern=r"^[0-9,\-]*$")
    user: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.:\-]*$")
    hostname: str = Field("", max_length=63, pattern=r"^([A-Za-z0-9][A-Za-z0-9\-]*)?$")

    def host_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.limits.items() if v}
        if self.restart_policy.Name:
            out["RestartPolicy"] = self.restart_policy.model_dump()
        if self.cpuset_cpus:
            out["CpusetCpus"] = self.cpuset_cpus
        return out


def kept_of(info: dict[str, Any]) -> dict[str, Any]:
    """The `Kept` fields of a container's `docker inspect`."""
    host = info.get("HostConfig") or {}
    config = info.get("Config") or {}
    hostname = str(config.get("Hostname") or "")
    policy = host.get("RestartPolicy") or {}
    return {
        "restart_policy": {"Name": str(policy.get("Name") or ""),
                           "MaximumRetryCount": int(policy.get("MaximumRetryCount") or 0)},
        "limits": {k: int(host[k]) for k in LIMITS if host.get(k)},
        "cpuset_cpus": str(host.get("CpusetCpus") or ""),
        "user": str(config.get("User") or ""),
        # Docker's default hostname is the id's first 12 digits: that one is new anyway
        "hostname": "" if hostname == str(info.get("Id", ""))[:12] else hostname,
    }


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
        name = str(info.get("Name", "")).lstrip("/") or docker_id[:12]
        # Every reason at once, so that one refusal says all there is to fix.
        cannot: list[str] = []
        if len(nets) > 1:
            cannot.append(f"it is on {len(nets)} networks ({', '.join(sorted(nets))}): a move "
                          f"takes one; disconnect it from the others first")
        held = [m for m in info.get("Mounts") or []
                if str(m.get("Type")) in MOUNTS_THAT_HOLD_DATA]
        if held:
            what = ", ".join(
                f"{m.get('Type')} {m.get('Name') or m.get('Source')} at {m.get('Destination')}"
                for m in held)
            cannot.append(f"it keeps data in {what}: it would not move with the container; "
                          f"copy it and run the container yourself")
        if cannot:
            raise PluginError(f"container {name} cannot move: {'; '.join(cannot)}")
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
            "kept": kept_of(info),
        }

    async def _run_moved(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = dict(args["spec"])
        ip, mac, epid = str(args["ip"]), str(args["mac"]), str(args["endpoint"])
        name = str(spec["network"])
        try:
            kept = Kept.model_validate(spec.get("kept") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"])
            raise PluginError(f"move of {spec.get('name')}: kept.{field}: {first['msg']}") from None
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
            "HostConfig": {"NetworkMode": name, "PortBindings": spec.get("port_bindings") or {},
                           **kept.host_config()},
            "NetworkingConfig": {
                "EndpointsConfig": {name: {"IPAMConfig": {"IPv4Address": ip}}}
            },
        }
        if kept.user:
            config["User"] = kept.user
        if kept.hostname:
            config["Hostname"] = kept.hostname
        self.pending_moves[ip] = epid
        try:
            cid = await from_docker(self.deps.docker.run(str(spec["name"]), config))
        finally:
            self.pending_moves.pop(ip, None)
        return {"docker_id": cid}
