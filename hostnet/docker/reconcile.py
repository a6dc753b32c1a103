"""Bring this host's Docker engine and endpoints in line with the controller.

After a restart, and every few seconds for held addresses, endpoints whose container
is gone are forgotten (`reconcile`); every few seconds, the engine gets every
daolinet network (`sync_networks`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from hostnet.agent.client import ControllerError
from hostnet.docker.common import (
    DOCKER_ENDPOINT_KEY,
    DOCKER_PUBLISHED_KEY,
    PROVISIONAL_PREFIX,
    NetworkDeletions,
    PluginDeps,
    PluginError,
    from_controller,
    from_docker,
)
from hostnet.docker.engine import SYNCED_LABEL, docker_subnets
from hostnet.docker.ipam import Ipam
from hostnet.docker.policies import RestartPolicies
from hostnet.docker.publish import Publisher
from hostnet.host.ovs import ENDPOINT_KEY
from hostnet.host.ports import unplug
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self, deps: PluginDeps, ipam: Ipam, publisher: Publisher, policies: RestartPolicies,
        subnets: dict[str, str] | None = None, deletions: NetworkDeletions | None = None,
    ) -> None:
        self.deps = deps
        self.ipam = ipam  # its held addresses: claimed ones are not removed
        self.publisher = publisher
        self.policies = policies
        # The driver's Docker network id -> subnet (driver.py), kept up to date here.
        self.subnets = subnets if subnets is not None else {}
        # The driver's DeleteNetwork calls (common.NetworkDeletions).
        self.deletions = deletions if deletions is not None else NetworkDeletions()
        self._known_networks: set[str] = set()  # the controller's, at the last sync

    async def reconcile(self, *, held_only: bool = False, network: str | None = None) -> None:
        """Forget endpoints whose Docker container is gone, and held addresses
        (ipam.py) of containers no longer on that network.

        `held_only` (the periodic run): only endpoints no Docker endpoint uses, since
        a plugged one may be a container moving in, whose Docker id is the old host's
        until its join is resolved.  `network`: only that network's endpoints.
        """
        endpoints = await self.deps.controller.list_containers(self.deps.host)
        if network is None:
            self.policies.keep_only(
                {str(ep["docker_id"]) for ep in endpoints if ep.get("docker_id")})
        else:
            endpoints = [ep for ep in endpoints if str(ep.get("network")) == network
                         and (ep.get("docker_id") or not held_only)]
            if not endpoints:
                return  # nothing to look at: spare the ports' reads
        ports = await in_thread(self.deps.executor, self.deps.ops.ports)
        by_endpoint = {ids[ENDPOINT_KEY]: (port, ids) for port, ids in ports.items()}
        live_ids = await self.ipam.live_endpoints()
        for ep in endpoints:
            epid = str(ep["id"])
            docker_id = ep.get("docker_id")
            port_ids = by_endpoint.get(epid)
            live = epid in live_ids
            if (held_only and (live or not docker_id)) or epid in self.ipam.claimed:
                continue
            if docker_id:
                info = await self.deps.docker.inspect(str(docker_id))
                if info is not None and (live or str(ep.get("network")) in (
                        (info.get("NetworkSettings") or {}).get("Networks") or {})):
                    continue
            elif not str(ep.get("name", "")).startswith(PROVISIONAL_PREFIX):
                continue  # not a Docker container
            elif port_ids is not None and DOCKER_ENDPOINT_KEY in port_ids[1]:
                continue  # a live Docker endpoint still waiting for its name
            # Not while a request is given a held address: one given back since the
            # listing above is claimed, or plugged by now.
            async with self.ipam.giving_back:
                if epid in self.ipam.claimed or (
                        held_only and epid in await self.ipam.live_endpoints()):
                    continue
                if port_ids is not None and port_ids[1].get(DOCKER_PUBLISHED_KEY):
                    try:  # its `-p` ports (Docker never revoked them: the agent was down)
                        await self.publisher.unpublish(*port_ids)
                    except PluginError as exc:
                        log.warning("ports of %s not unpublished: %s", ep.get("name"), exc)
                if port_ids is not None:
                    await in_thread(self.deps.executor, unplug, self.deps.ops, port_ids[0])
                with contextlib.suppress(ControllerError):
                    await self.deps.controller.delete_container(epid)
            log.info("removed stale Docker endpoint %s (%s)", ep.get("name"), ep.get("ip"))

    async def forget_held(self, network: str) -> None:
        """Before this engine's `docker network rm` deletes the daolinet network
        `network` (driver.py): forget the held addresses of its containers that are
        gone.  Docker gives a removed container's address back as it gives back a
        stopped one's, so `docker rm -f c && docker network rm net` comes before the
        periodic run has forgotten c's address, and the controller would keep the
        network for it (409: an endpoint uses it), here and in every other engine."""
        await self.reconcile(held_only=True, network=network)

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
        # This engine first, the controller second: a `docker network rm` that ends
        # between the two reads has deleted the network at the controller too (the
        # driver's DeleteNetwork), so it is not made again here (read the other way
        # round, it was).  A rm still inside the driver call when this engine is read
        # (Docker hides a network it is deleting before calling the driver), or whose
        # driver call begins before a network is made here, makes this sync make none:
        # the next one decides.  Left: a rm that Docker hid before this engine was read
        # and that calls the driver only after the network is made again.
        deletions_begun = self.deletions.begun
        found = await from_docker(self.deps.docker.networks())
        for net in found:
            subs = docker_subnets(net)
            if subs:
                self.subnets[str(net.get("Id"))] = str(subs[0][0])
        local = await self._drop_duplicate_networks(found)
        networks = await from_controller(self.deps.controller.list_networks())
        wanted = {str(n["name"]): n for n in networks}
        for name, net in wanted.items():
            if name in local:
                continue
            if self.deletions.running or self.deletions.begun != deletions_begun:
                log.info("network sync: a network is being deleted here; next sync")
                break
            try:
                mtu = int(net.get("mtu") or 1500)
                await from_docker(self.deps.docker.create_network(
                    name, str(net["subnet"]), str(net.get("gateway") or "") or None,
                    mtu=None if mtu == 1500 else mtu, internal=bool(net.get("internal")),
                    aux=[str(a) for a in net.get("reserved") or []],
                    labels={str(k): str(v) for k, v in (net.get("labels") or {}).items()},
                ))
                log.info("network %s (%s) created in the local Docker engine", name, net["subnet"])
            except PluginError as exc:
                log.warning("network %s not created in the local Docker engine: %s", name, exc)
        for name, docker_net in local.items():
            if name in wanted or name not in self._known_networks:
                continue
            docker_id = str(docker_net.get("Id"))
            if await from_docker(self.deps.docker.containers(docker_id)):
                continue
            await from_docker(self.deps.docker.remove_network(docker_id))
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
                if await from_docker(self.deps.docker.containers(docker_id)):
                    kept.append(net)  # in use: it stays
                    continue
                await from_docker(self.deps.docker.remove_network(docker_id))
                log.info("network %s: removed the agent's duplicate %s", name, docker_id[:12])
            local[name] = kept[0]
        return local
