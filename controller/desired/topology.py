"""Hosts, networks and endpoints: where containers are and how they are addressed.

Each change runs inside `StoreSync.change()` (sync.py): checked against the index,
written to the store, put into the index, its events appended for announcement.
Lookups raise `NotFound`; a taken name or address is a `Conflict`, and so is an
address that would clash with another kind: a subnet holding a host's underlay or
tunnel address, a host address inside a subnet, a container on a host's address
(docs/security.md, "Validation").
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from typing import Any

from controller.desired.errors import Conflict, Invalid, NotFound
from controller.desired.events import (
    EndpointAdded,
    EndpointRemoved,
    EndpointRenamed,
    HostRegistered,
    HostRemoved,
    NetworkAdded,
    NetworkChanged,
    PublishedPortAdded,
    PublishedPortRemoved,
)
from controller.desired.models import Endpoint, Host, Network, mac_for_ip, utcnow
from controller.desired.replication import (
    DPID_COUNTER,
    ENDPOINTS,
    HOSTS,
    META,
    NETWORKS,
    PUBLISHED,
)
from controller.desired.sync import StoreSync
from controller.desired.validation import (
    check_container_ip,
    check_labels,
    check_mtu,
    check_name,
    check_wireguard,
    parse_address,
    parse_gateway,
    parse_mac,
    parse_reserved,
    parse_subnet,
    parse_underlay_address,
)
from controller.store.base import StoreConflict

PORT_PREFIX = "dl"
IPv4 = ipaddress.IPv4Address


class Topology:
    """The changes and lookups of hosts, networks and endpoints."""

    def __init__(self, sync: StoreSync) -> None:
        self._sync = sync
        self._store = sync.store
        self._index = sync.index
        # subnet -> (DesiredIndex.addresses_freed when it was cached, an address
        # below which every one is taken): the free-address search starts there
        # instead of at the subnet's first address (issue 22: registering 100,000
        # containers scanned every used address each time).
        self._taken_below: dict[ipaddress.IPv4Network, tuple[int, int]] = {}

    # --- hosts -----------------------------------------------------------------------
    def register_host(
        self,
        name: str,
        address: str | ipaddress.IPv4Address,
        site: str = "default",
        *,
        wg_public_key: str | None = None,
        wg_endpoint: str | None = None,
        tunnel_address: str | ipaddress.IPv4Address | None = None,
        relay: bool = False,
    ) -> Host:
        name = check_name("host name", name)
        wg = check_wireguard(wg_public_key, wg_endpoint, tunnel_address, relay)
        addr = parse_underlay_address(address)
        site = check_name("site", site)
        with self._sync.change() as events:
            other = self._index.host_by_address(addr)
            if other is not None and other.name != name:
                raise Conflict(f"address {addr} is already registered by host {other.name}")
            tunnel = wg.get("tunnel_address")
            for h in self._index.hosts() if tunnel is not None else ():
                if h.name != name and h.tunnel_address == tunnel:
                    raise Conflict(f"tunnel address {tunnel} is already used by host {h.name}")
            old = self._index.host(name)
            self._check_host_addresses(name, old, addr, tunnel)
            if old is not None:
                host = Host(name=name, address=addr, site=site, dpid=old.dpid, **wg)
            else:
                host = Host(name=name, address=addr, site=site, dpid=self._next_dpid(), **wg)
            self._store.put(HOSTS, name, host.model_dump(mode="json"))
            self._index.put_host(host)
            events.append(HostRegistered(host))
        return host

    def _check_host_addresses(
        self, name: str, old: Host | None, addr: IPv4, tunnel: IPv4 | None
    ) -> None:
        """A host's addresses clash with no other host's and lie in no network.

        An address the host already had passes the network check: a store written
        before the check may hold such a clash, and refusing the host's re-registration
        would stop its agent without mending anything.
        """
        other = self._index.host_by_tunnel(addr)
        if other is not None and other.name != name:
            raise Conflict(f"address {addr} is the tunnel address of host {other.name}")
        other = self._index.host_by_address(tunnel) if tunnel is not None else None
        if other is not None and other.name != name:
            raise Conflict(f"tunnel_address {tunnel} is the address of host {other.name}")
        fields = [("address", addr, old.address if old else None)]
        if tunnel is not None:
            fields.append(("tunnel_address", tunnel, old.tunnel_address if old else None))
        for field, value, had in fields:
            if value == had:
                continue
            for net in self._index.networks():
                if value in net.subnet:
                    raise Conflict(
                        f"{field} {value} is inside subnet {net.subnet} of network {net.name}"
                    )

    def set_host_key(self, name: str, public_key: str) -> Host:
        """Record a host's new WireGuard public key (after `rotate-key`)."""
        check_wireguard(public_key, None, None, False)
        with self._sync.change() as events:
            old = self.host(name)
            host = old.model_copy(update={"wg_public_key": public_key})
            self._store.put(HOSTS, name, host.model_dump(mode="json"))
            self._index.put_host(host)
            events.append(HostRegistered(host))
        return host

    def remove_host(self, name: str, *, force: bool = False) -> tuple[Host, list[Endpoint]]:
        """Remove a host and, with `force`, its containers' endpoints (a `Conflict`
        naming them otherwise): the host and its endpoints, and their `EndpointRemoved`
        then `HostRemoved`, in one change (one store transaction).  Its dpid is not
        reused: registering the name again makes a new host with a new switch."""
        with self._sync.change() as events:
            host = self.host(name)
            endpoints = self._index.endpoints(host=name)
            if endpoints and not force:
                shown = ", ".join(e.name for e in endpoints[:5])
                more = f" and {len(endpoints) - 5} more" if len(endpoints) > 5 else ""
                raise Conflict(
                    f"host {name} still has {len(endpoints)} container(s): {shown}{more}; "
                    "remove them first, or force the removal (their endpoints go too)"
                )
            for endpoint in endpoints:
                self._store.delete(ENDPOINTS, endpoint.id)
                self._index.drop_endpoint(endpoint.id)
                events.append(EndpointRemoved(endpoint))
            self._store.delete(HOSTS, name)
            self._index.drop_host(name)
            events.append(HostRemoved(host))
        return host, endpoints

    def _next_dpid(self) -> int:
        counter = self._store.get(META, DPID_COUNTER)
        dpid = int(counter["value"]) if counter else 1
        # Persist the counter before the host: a crash in between skips a dpid,
        # it never hands one out twice.
        self._store.put(META, DPID_COUNTER, {"value": dpid + 1})
        return dpid

    def host(self, name: str) -> Host:
        host = self._index.host(name)
        if host is None:
            raise NotFound(f"host {name} not found")
        return host

    def hosts(self) -> list[Host]:
        return self._index.hosts()

    # --- networks --------------------------------------------------------------------
    def create_network(
        self,
        name: str,
        subnet: str | ipaddress.IPv4Network,
        gateway: str | ipaddress.IPv4Address | None = None,
        mtu: int | None = None,
        external: bool = False,
        *,
        internal: bool = False,
        reserved: Sequence[str | ipaddress.IPv4Address] = (),
        labels: dict[str, str] | None = None,
    ) -> Network:
        """A new network; `internal`: never any external access (no `external`, no
        published ports); `reserved`: addresses no container is given; `labels`:
        kept for Docker (every engine's copy of the network gets them)."""
        name = check_name("network name", name)
        net = parse_subnet(subnet)
        gw = parse_gateway(net, gateway)
        mtu = check_mtu(mtu)
        if internal and external:
            raise Invalid("external: an internal network has no external access")
        kept = parse_reserved(net, reserved)
        labels = check_labels(labels or {})
        with self._sync.change() as events:
            if self._index.network(name) is not None:
                raise Conflict(f"network {name} already exists")
            for other in self._index.networks():
                if net.overlaps(other.subnet):
                    raise Conflict(f"subnet {net} overlaps network {other.name} ({other.subnet})")
            for host in self._index.hosts():
                for value in (host.address, host.tunnel_address):
                    if value is not None and value in net:
                        raise Conflict(f"subnet {net} holds {value}, {self._host_of(value)}")
            network = Network(
                id=uuid.uuid4().hex, name=name, subnet=net, gateway=gw, mtu=mtu,
                external=bool(external), internal=bool(internal), reserved=kept,
                labels=labels,
            )
            try:
                self._store.put(NETWORKS, name, network.model_dump(mode="json"), create=True)
            except StoreConflict:
                raise Conflict(f"network {name} already exists") from None
            self._index.put_network(network)
            events.append(NetworkAdded(network))
        return network

    def network(self, name: str) -> Network:
        network = self._index.network(name)
        if network is None:
            raise NotFound(f"network {name} not found")
        return network

    def networks(self) -> list[Network]:
        return self._index.networks()

    def drop_network(self, name: str) -> Network:
        """Delete a network no container uses (inside a change: Inventory.delete_network
        also forgets its policy and announces the removal)."""
        network = self.network(name)
        users = self._index.endpoints(network=name)
        if users:
            shown = ", ".join(e.name for e in users[:5])
            more = f" and {len(users) - 5} more" if len(users) > 5 else ""
            raise Conflict(f"network {name} still has {len(users)} container(s): {shown}{more}")
        self._store.delete(NETWORKS, name)
        self._index.drop_network(name)
        return network

    def set_network_external(self, name: str, external: bool) -> Network:
        """Turn a network's external access (masquerade to outside daolinet) on or off."""
        with self._sync.change() as events:
            before = self.network(name)
            if before.external == external:
                return before
            if external and before.internal:
                raise Conflict(f"network {name} is internal: it has no external access")
            after = before.model_copy(update={"external": bool(external)})
            self._store.put(NETWORKS, name, after.model_dump(mode="json"))
            self._index.put_network(after)
            events.append(NetworkChanged(before, after))
        return after

    # --- endpoints -------------------------------------------------------------------
    def add_endpoint(
        self,
        name: str,
        network: str,
        host: str,
        ip: str | ipaddress.IPv4Address | None = None,
        mac: str | None = None,
    ) -> Endpoint:
        name = check_name("container name", name)
        want_ip = None if ip is None or ip == "" else parse_address("ip", ip)
        want_mac = None if mac is None or mac == "" else parse_mac(mac)
        with self._sync.change() as events:
            existing = self._index.endpoint(name)
            if existing is not None and existing.name == name:
                raise Conflict(f"container {name} already exists (id {existing.id})")
            net = self.network(network)
            self.host(host)
            if want_ip is None:
                addr = self._free_address(net)
            else:
                addr = want_ip
                check_container_ip(net, addr)
                self._check_not_a_host(addr)
                if addr in net.reserved:
                    raise Conflict(f"ip {addr} is reserved on network {net.name}")
            holder = self._index.endpoint_by_ip(addr)
            if holder is not None:
                raise Conflict(f"ip {addr} is already used by container {holder.name}")
            hw = want_mac if want_mac is not None else mac_for_ip(addr)
            other = self._index.endpoint_by_mac(hw)
            if other is not None:
                raise Conflict(f"mac {hw} is already used by container {other.name}")
            ep_id = uuid.uuid4().hex
            endpoint = Endpoint(
                id=ep_id,
                name=name,
                network=net.name,
                host=host,
                ip=addr,
                mac=hw,
                port=PORT_PREFIX + ep_id[:12],
                created_at=utcnow(),
            )
            try:
                self._store.put(ENDPOINTS, ep_id, endpoint.model_dump(mode="json"), create=True)
            except StoreConflict:  # pragma: no cover - uuid4 collision
                raise Conflict(f"container id {ep_id} already exists") from None
            self._index.put_endpoint(endpoint)
            events.append(EndpointAdded(endpoint))
        return endpoint

    def _host_of(self, addr: IPv4) -> str | None:
        """'the address of host h1' if a host has `addr` as underlay or tunnel address."""
        host = self._index.host_by_address(addr)
        if host is not None:
            return f"the address of host {host.name}"
        host = self._index.host_by_tunnel(addr)
        return f"the tunnel address of host {host.name}" if host is not None else None

    def _check_not_a_host(self, addr: IPv4) -> None:
        holder = self._host_of(addr)
        if holder is not None:
            raise Conflict(f"ip {addr} is {holder}")

    def _free_address(self, net: Network) -> IPv4:
        """The lowest address of `net` that is neither its gateway, reserved, a
        container's nor a host's."""
        first = int(net.subnet.network_address) + 1
        last = int(net.subnet.broadcast_address) - 1
        freed = self._index.addresses_freed
        cached = self._taken_below.get(net.subnet)
        if cached is not None and cached[0] == freed:
            first = max(first, cached[1])
        for value in range(first, last + 1):
            candidate = IPv4(value)
            if (
                candidate != net.gateway
                and candidate not in net.reserved
                and self._index.endpoint_by_ip(candidate) is None
                and self._host_of(candidate) is None
            ):
                self._taken_below[net.subnet] = (freed, value)
                return candidate
        raise Conflict(f"network {net.name} ({net.subnet}) has no free address left")

    def endpoint(self, name_or_id: str) -> Endpoint:
        """By endpoint id, name, Docker id or a unique Docker id prefix (>= 12 digits)."""
        endpoint = self._index.endpoint(name_or_id)
        if endpoint is None and len(name_or_id) >= 12:
            found = [
                e for e in self._index.endpoints()
                if e.docker_id is not None and e.docker_id.startswith(name_or_id)
            ]
            if len(found) == 1:
                endpoint = found[0]
        if endpoint is None:
            raise NotFound(f"container {name_or_id} not found")
        return endpoint

    def update_endpoint(
        self, name_or_id: str, *, name: str | None = None, docker_id: str | None = None,
        aliases: Sequence[str] | None = None, hostname: str | None = None,
    ) -> Endpoint:
        """Rename an endpoint, record its Docker id and/or the other names it resolves
        by (`aliases`, `hostname`; "" clears the hostname).

        The endpoint's published ports go with a new name (the Docker plugin publishes
        `-p` ports under the provisional name, before Docker tells the container's):
        a port the new name already publishes on the same host port is a conflict."""
        if name is not None:
            name = check_name("container name", name)
        with self._sync.change() as events:
            endpoint = self.endpoint(name_or_id)
            changes: dict[str, Any] = {}
            if name is not None and name != endpoint.name:
                other = self._index.endpoint(name)
                if other is not None and other.id != endpoint.id:
                    raise Conflict(f"container {name} already exists (id {other.id})")
                changes["name"] = name
            if docker_id is not None and docker_id != endpoint.docker_id:
                changes["docker_id"] = docker_id
            if aliases is not None and tuple(aliases) != endpoint.aliases:
                changes["aliases"] = tuple(dict.fromkeys(aliases))
            if hostname is not None and (hostname or None) != endpoint.hostname:
                changes["hostname"] = hostname or None
            if not changes:
                return endpoint
            updated = Endpoint.model_validate(endpoint.model_dump() | changes)
            self._store.put(ENDPOINTS, updated.id, updated.model_dump(mode="json"))
            self._index.put_endpoint(updated)
            if "name" in changes:
                self._carry_published_ports(endpoint.name, updated.name, events)
            if changes.keys() & {"name", "aliases", "hostname"}:
                events.append(EndpointRenamed(endpoint, updated))
        return updated

    def _carry_published_ports(self, old: str, new: str, events: list[Any]) -> None:
        """Give `old`'s published ports to `new` (inside a change)."""
        taken = {(p.protocol, p.host_port): p for p in self._index.published_ports(new)}
        for port in self._index.published_ports(old):
            clash = taken.get((port.protocol, port.host_port))
            if clash is not None:
                raise Conflict(
                    f"host_port {port.host_port}/{port.protocol} is already published for "
                    f"container {new} (id {clash.id})"
                )
            moved = port.model_copy(update={"container": new})
            self._store.put(PUBLISHED, moved.id, moved.model_dump(mode="json"))
            self._index.put_published_port(moved)
            events.append(PublishedPortRemoved(port))
            events.append(PublishedPortAdded(moved))

    def relocate_endpoint(self, name_or_id: str, host: str) -> Endpoint:
        """Move an endpoint (same id, IP, MAC) to another host.

        Announced as removed + added: the core retracts every flow and route of the
        old place at once, and the new host gets the `local` route.
        """
        with self._sync.change() as events:
            endpoint = self.endpoint(name_or_id)
            self.host(host)
            if endpoint.host == host:
                return endpoint
            moved = endpoint.model_copy(update={"host": host})
            self._store.put(ENDPOINTS, moved.id, moved.model_dump(mode="json"))
            self._index.put_endpoint(moved)
            events.append(EndpointRemoved(endpoint))
            events.append(EndpointAdded(moved))
        return moved

    def endpoints(self, host: str | None = None, network: str | None = None) -> list[Endpoint]:
        return self._index.endpoints(host=host, network=network)

    def remove_endpoint(self, name_or_id: str) -> Endpoint:
        with self._sync.change() as events:
            endpoint = self.endpoint(name_or_id)
            self._store.delete(ENDPOINTS, endpoint.id)
            self._index.drop_endpoint(endpoint.id)
            events.append(EndpointRemoved(endpoint))
        return endpoint
