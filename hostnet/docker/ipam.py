"""Docker's remote IPAM driver (libnetwork `docs/ipam.md`): pools and addresses.

A pool is identified by its CIDR (daolinet subnets never overlap), so a pool id is
meaningful after any restart.  A container's address is reserved at the controller
by `RequestAddress` under a provisional name (`docker-XXXXXXXXXXXX`); the network
driver renames the endpoint once the container has joined.

Addresses of containers that still exist are held: Docker gives an address back
whenever a container stops, also when dockerd or the host restarts (libnetwork's
cleanup of the previous run), and asks again when the container starts.  So a
`ReleaseAddress` of an endpoint that has a Docker id keeps the endpoint (id, IP, MAC,
name), and the next `RequestAddress` of that network on this host gets a held
address back before a new one is reserved: a restarted container keeps its address
and its name (on a new endpoint when Docker gave it a new MAC, see request_address).
Docker's IPAM protocol does not say which container asks, so when
several containers of one network start at once (a host's boot) each gets one of the
held addresses (those of containers with a restart policy first, policies.py, then
the lowest); `--ip` names the one it gets.  Held endpoints whose
container is gone, or no longer on that network, are removed by the reconciler
(reconcile.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from typing import Any

from controller.desired.addresses import check_subnet, field_check
from hostnet.agent.client import ControllerError
from hostnet.docker.common import (
    ADDRESS_SPACE,
    DOCKER_ENDPOINT_KEY,
    PROVISIONAL_PREFIX,
    PluginDeps,
    PluginError,
    from_controller,
    from_docker,
    ipv4_of,
    subnet_of,
)
from hostnet.docker.engine import docker_network_options, docker_subnets
from hostnet.docker.policies import RestartPolicies
from hostnet.host.ovs import ENDPOINT_KEY
from hostnet.host.worker import in_thread

log = logging.getLogger(__name__)

GATEWAY_REQUEST = "com.docker.network.gateway"
# A container's MAC in RequestAddress's options (netlabel.MacAddress), sent because
# `capabilities` asks for it.
MAC_OPTION = "com.docker.network.endpoint.macaddress"


class Ipam:
    """Pools and addresses; `pending_moves` (ip -> endpoint id) are addresses of
    containers moving in here, which keep their endpoint (hostnet/docker/move.py)."""

    def __init__(
        self, deps: PluginDeps, pending_moves: dict[str, str], policies: RestartPolicies
    ) -> None:
        self.deps = deps
        self.pending_moves = pending_moves
        self.policies = policies
        self._lock = asyncio.Lock()  # network creation at the controller
        self.giving_back = asyncio.Lock()  # one held address to one request
        # Held endpoints given back, until the driver plugs them (or Docker releases).
        self.claimed: set[str] = set()

    async def capabilities(self, _: dict[str, Any]) -> dict[str, Any]:
        # Docker then passes every container's MAC (`--mac-address`, or one it makes
        # up) to RequestAddress, and the endpoint is reserved with it: the datapath
        # takes any unicast MAC (anti-spoofing and delivery use the endpoint's; ARP is
        # answered with the gateway's).  It also tells a container's request from an
        # aux address's, which has no options.
        return {"RequiresMACAddress": True}

    async def address_spaces(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    async def endpoint_by_ip(self, ip: str) -> dict[str, Any] | None:
        """This host's endpoint at the controller with address `ip`."""
        for ep in await from_controller(self.deps.controller.list_containers(self.deps.host)):
            if str(ep.get("ip")) == ip:
                return ep
        return None

    async def live_endpoints(self) -> set[str]:
        """Endpoint ids plugged into a Docker endpoint on this host now: an OVS port
        with a Docker endpoint id, and its veth.  A port whose veth is gone is a
        leftover of the previous boot (the veth went with the container's namespace;
        Open vSwitch keeps its ports in its database) that Docker's clean-up has not
        removed yet: its address is held, not in use."""
        return await in_thread(self.deps.executor, self._live_endpoints)

    def _live_endpoints(self) -> set[str]:
        ops = self.deps.ops
        return {ids[ENDPOINT_KEY] for port, ids in ops.ports().items()
                if ENDPOINT_KEY in ids and DOCKER_ENDPOINT_KEY in ids and ops.link_exists(port)}

    async def held_endpoint(self, network: str, ip: str | None,
                            mac: str | None = None) -> dict[str, Any] | None:
        """A held address of `network` on this host (`ip` if given): an endpoint of a
        Docker container that no Docker endpoint uses now.  First the one with `mac`
        (a MAC Docker kept: that container's own), then those of containers that
        dockerd restarts by itself (a restart policy: the requests of a boot come from
        them), then the lowest address."""
        endpoints = await from_controller(self.deps.controller.list_containers(self.deps.host))
        live = await self.live_endpoints()
        held = [
            ep for ep in endpoints
            if ep.get("docker_id") and str(ep.get("network")) == network
            and str(ep["id"]) not in live and str(ep["id"]) not in self.claimed
            and (ip is None or str(ep.get("ip")) == ip)
        ]
        held.sort(key=lambda ep: (str(ep.get("mac", "")).lower() != (mac or "").lower(),
                                  not self.policies.restarts_at_boot(str(ep["docker_id"])),
                                  ipaddress.IPv4Address(str(ep["ip"]))))
        return held[0] if held else None

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
        unknown = sorted(req.get("Options") or {})
        if unknown:
            raise PluginError(
                f"unknown option --ipam-opt {unknown[0]}: the daolinet IPAM takes none"
            )
        text = str(req["Pool"])
        try:
            net = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise PluginError(f"subnet {text} is not a valid IPv4 CIDR: {exc}") from None
        try:  # the controller's rules, before Docker records a pool it would refuse
            field_check(check_subnet, "subnet")(net)
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        local = [
            (n, sub) for n in await from_docker(self.deps.docker.networks())
            for sub, _ in docker_subnets(n)
        ]
        for other in await from_controller(self.deps.controller.list_networks()):
            sub = subnet_of(other.get("subnet"))
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

    async def network_for_subnet(self, net: ipaddress.IPv4Network) -> dict[str, Any]:
        """The controller's network of `net`, created from the Docker network if new.

        Docker passes network ids, never names: the daolinet network is created under
        the Docker name, read from the Docker API once `docker network create` has
        finished (in the background, and at the latest when the first address of the
        network is requested)."""
        async with self._lock:
            for other in await from_controller(self.deps.controller.list_networks()):
                if subnet_of(other.get("subnet")) == net:
                    return other
            for docker_net in await from_docker(self.deps.docker.networks()):
                for sub, gateway in docker_subnets(docker_net):
                    if sub == net:
                        name = str(docker_net.get("Name"))
                        options = docker_network_options(docker_net)
                        created = await from_controller(self.deps.controller.create_network(
                            name, str(net), gateway, mtu=options["mtu"],
                            internal=options["internal"], reserved=options["reserved"],
                            labels=options["labels"],
                        ))
                        log.info("network %s (%s) created for Docker", name, net)
                        return created
        raise PluginError(f"no daolinet network has subnet {net}")

    async def request_address(self, req: dict[str, Any]) -> dict[str, Any]:
        net = subnet_of(req.get("PoolID"))
        options = req.get("Options") or {}
        wanted = ipv4_of(req["Address"]) if req.get("Address") else None
        if options.get("RequestAddressType") == GATEWAY_REQUEST:
            if wanted is None:
                wanted = str(net.network_address + 1)
                for other in await from_controller(self.deps.controller.list_networks()):
                    if subnet_of(other.get("subnet")) == net:
                        wanted = str(other.get("gateway"))
            return {"Address": f"{wanted}/{net.prefixlen}", "Data": {}}
        mac = str(options.get(MAC_OPTION) or "") or None
        if wanted is not None and mac is None:
            return await self._aux_address(net, wanted)
        network = await self.network_for_subnet(net)
        if wanted is not None and wanted in self.pending_moves:
            return {"Address": f"{wanted}/{net.prefixlen}", "Data": {}}
        async with self.giving_back:
            held = await self.held_endpoint(str(network["name"]), wanted, mac)
            if held is not None:
                if mac is None or str(held.get("mac", "")).lower() == mac.lower():
                    self.claimed.add(str(held["id"]))
                    log.info("address %s given back (endpoint %s)", held["ip"], held["name"])
                    return {"Address": f"{held['ip']}/{net.prefixlen}", "Data": {}}
                # Docker makes a new MAC at every start of a container run without
                # --mac-address (it keeps only a configured one: moby #47233), and
                # CreateEndpoint must be given the endpoint's: the address stays, on a
                # new endpoint with this MAC (the name follows at the join).
                await from_controller(self.deps.controller.delete_container(str(held["id"])))
                log.info("address %s given back with MAC %s (endpoint %s replaced)",
                         held["ip"], mac, held["name"])
                wanted = str(held["ip"])
        ep = await from_controller(self.deps.controller.create_container(
            name=PROVISIONAL_PREFIX + uuid.uuid4().hex[:12], network=str(network["name"]),
            host=self.deps.host, ip=wanted, mac=mac,
        ))
        log.info("address %s reserved (endpoint %s)", ep["ip"], ep["id"])
        return {"Address": f"{ep['ip']}/{net.prefixlen}", "Data": {}}

    async def _aux_address(self, net: ipaddress.IPv4Network, ip: str) -> dict[str, Any]:
        """An `--aux-address` of a network being created (libnetwork asks for each
        before CreateNetwork, with no options).  The daolinet network made from the
        Docker network reserves it; a network that exists already must hold it."""
        for other in await from_controller(self.deps.controller.list_networks()):
            if subnet_of(other.get("subnet")) == net and ip not in (other.get("reserved") or []):
                raise PluginError(
                    f"--aux-address {ip} is not reserved on network {other.get('name')} "
                    f"({net}), which exists already"
                )
        return {"Address": f"{ip}/{net.prefixlen}", "Data": {}}

    async def release_address(self, req: dict[str, Any]) -> dict[str, Any]:
        ip = ipv4_of(req.get("Address"))
        if ip in self.pending_moves:
            return {}
        ep = await self.endpoint_by_ip(ip)
        if ep is not None:
            self.claimed.discard(str(ep["id"]))
            if ep.get("docker_id"):
                log.info("address %s held for container %s", ip, ep["name"])
                return {}
            try:
                await self.deps.controller.delete_container(str(ep["id"]))
            except ControllerError as exc:
                if exc.status != 404:
                    raise PluginError(exc.detail) from exc
            log.info("address %s released (endpoint %s)", ip, ep["name"])
        return {}
