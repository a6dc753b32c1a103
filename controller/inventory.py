"""The inventory: validated changes to the desired state.

Every change is checked against the current state, written to the store, mirrored
into the in-memory `DesiredIndex` the core reads, and then announced through
`on_change`.  The store is written first, so a crash never leaves the index (and
the switches) ahead of what a restart would load.

Changes are serialised by one lock.  The announcement happens after that lock is
released (the callback may read the inventory or take its own locks), but a second,
re-entrant lock keeps announcements in the order the changes were made.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from controller.desired import DesiredIndex
from controller.events import (
    Change,
    EndpointAdded,
    EndpointRemoved,
    HostRegistered,
    NetworkAdded,
    NetworkRemoved,
)
from controller.models import (
    GATEWAY_MAC,
    Endpoint,
    Host,
    MacAddress,
    Name,
    Network,
    mac_for_ip,
    utcnow,
)
from controller.store import Store, StoreConflict

log = logging.getLogger(__name__)

# Store kinds.
HOSTS = "host"  # key: host name
NETWORKS = "network"  # key: network name
ENDPOINTS = "endpoint"  # key: endpoint id
META = "meta"  # key: counter name
DPID_COUNTER = "next_dpid"

MTU_MIN, MTU_MAX, MTU_DEFAULT = 576, 9000, 1500
PORT_PREFIX = "dl"

_R = TypeVar("_R", Host, Network, Endpoint)

_name_adapter: TypeAdapter[str] = TypeAdapter(Name)
_mac_adapter: TypeAdapter[str] = TypeAdapter(MacAddress)


class InventoryError(Exception):
    """A refused change; the message names the offending field and value."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(InventoryError):
    status_code = 404


class Conflict(InventoryError):
    status_code = 409


class Invalid(InventoryError):
    status_code = 422


# --- parsing helpers ---------------------------------------------------------------


def _check_name(field: str, value: str) -> str:
    try:
        return _name_adapter.validate_python(value)
    except ValidationError:
        raise Invalid(
            f"{field} {value!r} is invalid: use 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        ) from None


def _parse_address(field: str, value: str | ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    try:
        return ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        raise Invalid(f"{field} {value!r} is not an IPv4 address") from None


def _parse_subnet(value: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        subnet = value
    else:
        text = str(value).strip()
        if "/" not in text:
            raise Invalid(f"subnet {value!r} is not an IPv4 CIDR (expected e.g. 10.1.0.0/24)")
        try:
            subnet = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                try:
                    fixed = ipaddress.IPv4Network(text, strict=False)
                except ValueError:  # pragma: no cover - strict failed only on host bits
                    fixed = None
                hint = f" (did you mean {fixed}?)" if fixed is not None else ""
                raise Invalid(f"subnet {text} has host bits set{hint}") from None
            raise Invalid(
                f"subnet {value!r} is not an IPv4 CIDR (expected e.g. 10.1.0.0/24)"
            ) from None
    if subnet.prefixlen > 30:
        raise Invalid(
            f"subnet {subnet} leaves no room for a gateway and containers: use /30 or larger"
        )
    return subnet


def _parse_mac(value: str) -> str:
    try:
        mac = _mac_adapter.validate_python(str(value).strip().lower())
    except ValidationError:
        raise Invalid(
            f"mac {value!r} is not a MAC address (expected e.g. 02:da:0a:01:00:05)"
        ) from None
    if mac == GATEWAY_MAC:
        raise Invalid(f"mac {mac} is the virtual gateway MAC")
    if int(mac[:2], 16) & 1:
        raise Invalid(f"mac {mac} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise Invalid(f"mac {mac} is the all-zero address")
    return mac


class Inventory:
    """Validated desired state, persisted in a `Store`, mirrored in `index`."""

    def __init__(self, store: Store, on_change: Callable[[Change], None]) -> None:
        self.store = store
        self.on_change = on_change
        self.index = DesiredIndex()
        self._lock = threading.Lock()  # serialises changes
        self._announce = threading.RLock()  # keeps announcements in change order
        self._load()

    # --- loading ---------------------------------------------------------------------
    def _load(self) -> None:
        max_dpid = 0
        for doc in self.store.list(HOSTS):
            host = self._decode(Host, HOSTS, doc)
            self.index.put_host(host)
            max_dpid = max(max_dpid, host.dpid)
        for doc in self.store.list(NETWORKS):
            self.index.put_network(self._decode(Network, NETWORKS, doc))
        for doc in self.store.list(ENDPOINTS):
            self.index.put_endpoint(self._decode(Endpoint, ENDPOINTS, doc))
        # Never hand out a dpid again, even if the counter record was lost.
        counter = self.store.get(META, DPID_COUNTER)
        if counter is None or int(counter.get("value", 1)) <= max_dpid:
            self.store.put(META, DPID_COUNTER, {"value": max_dpid + 1})

    @staticmethod
    def _decode(model: type[_R], kind: str, doc: dict[str, Any]) -> _R:
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            raise RuntimeError(f"corrupt {kind} record in the store: {doc!r}: {exc}") from exc

    @contextmanager
    def _change(self) -> Iterator[list[Change]]:
        """Run one change under the lock; announce what it appended, in order."""
        events: list[Change] = []
        with self._announce:
            with self._lock:
                yield events
            for event in events:
                try:
                    self.on_change(event)
                except Exception:
                    log.exception("on_change failed for %s", type(event).__name__)

    # --- hosts -----------------------------------------------------------------------
    def register_host(
        self, name: str, address: str | ipaddress.IPv4Address, site: str = "default"
    ) -> Host:
        name = _check_name("host name", name)
        addr = _parse_address("address", address)
        if (
            addr.is_unspecified
            or addr.is_multicast
            or addr == ipaddress.IPv4Address("255.255.255.255")
        ):
            raise Invalid(f"address {addr} cannot be a host's underlay address")
        site = _check_name("site", site)
        with self._change() as events:
            other = self.index.host_by_address(addr)
            if other is not None and other.name != name:
                raise Conflict(f"address {addr} is already registered by host {other.name}")
            old = self.index.host(name)
            if old is not None:
                host = Host(name=name, address=addr, site=site, dpid=old.dpid)
            else:
                host = Host(name=name, address=addr, site=site, dpid=self._next_dpid())
            self.store.put(HOSTS, name, host.model_dump(mode="json"))
            self.index.put_host(host)
            events.append(HostRegistered(host))
        return host

    def _next_dpid(self) -> int:
        counter = self.store.get(META, DPID_COUNTER)
        dpid = int(counter["value"]) if counter else 1
        # Persist the counter before the host: a crash in between skips a dpid,
        # it never hands one out twice.
        self.store.put(META, DPID_COUNTER, {"value": dpid + 1})
        return dpid

    def host(self, name: str) -> Host:
        host = self.index.host(name)
        if host is None:
            raise NotFound(f"host {name} not found")
        return host

    def hosts(self) -> list[Host]:
        return self.index.hosts()

    # --- networks --------------------------------------------------------------------
    def create_network(
        self,
        name: str,
        subnet: str | ipaddress.IPv4Network,
        gateway: str | ipaddress.IPv4Address | None = None,
        mtu: int | None = None,
    ) -> Network:
        name = _check_name("network name", name)
        net = _parse_subnet(subnet)
        if gateway is None or gateway == "":
            gw = net.network_address + 1
        else:
            gw = _parse_address("gateway", gateway)
            if gw not in net:
                raise Invalid(f"gateway {gw} is outside subnet {net}")
            if gw == net.network_address:
                raise Invalid(f"gateway {gw} is the network address of subnet {net}")
            if gw == net.broadcast_address:
                raise Invalid(f"gateway {gw} is the broadcast address of subnet {net}")
        if mtu is None:
            mtu = MTU_DEFAULT
        if not MTU_MIN <= mtu <= MTU_MAX:
            raise Invalid(f"mtu {mtu} is out of range {MTU_MIN}-{MTU_MAX}")
        with self._change() as events:
            if self.index.network(name) is not None:
                raise Conflict(f"network {name} already exists")
            for other in self.index.networks():
                if net.overlaps(other.subnet):
                    raise Conflict(f"subnet {net} overlaps network {other.name} ({other.subnet})")
            network = Network(id=uuid.uuid4().hex, name=name, subnet=net, gateway=gw, mtu=mtu)
            try:
                self.store.put(NETWORKS, name, network.model_dump(mode="json"), create=True)
            except StoreConflict:
                raise Conflict(f"network {name} already exists") from None
            self.index.put_network(network)
            events.append(NetworkAdded(network))
        return network

    def network(self, name: str) -> Network:
        network = self.index.network(name)
        if network is None:
            raise NotFound(f"network {name} not found")
        return network

    def networks(self) -> list[Network]:
        return self.index.networks()

    def delete_network(self, name: str) -> Network:
        with self._change() as events:
            network = self.network(name)
            users = self.index.endpoints(network=name)
            if users:
                shown = ", ".join(e.name for e in users[:5])
                more = f" and {len(users) - 5} more" if len(users) > 5 else ""
                raise Conflict(f"network {name} still has {len(users)} container(s): {shown}{more}")
            self.store.delete(NETWORKS, name)
            self.index.drop_network(name)
            events.append(NetworkRemoved(network))
        return network

    # --- endpoints -------------------------------------------------------------------
    def add_endpoint(
        self,
        name: str,
        network: str,
        host: str,
        ip: str | ipaddress.IPv4Address | None = None,
        mac: str | None = None,
    ) -> Endpoint:
        name = _check_name("container name", name)
        want_ip = None if ip is None or ip == "" else _parse_address("ip", ip)
        want_mac = None if mac is None or mac == "" else _parse_mac(mac)
        with self._change() as events:
            existing = self.index.endpoint(name)
            if existing is not None and existing.name == name:
                raise Conflict(f"container {name} already exists (id {existing.id})")
            net = self.network(network)
            self.host(host)
            if want_ip is None:
                addr = self._free_address(net)
            else:
                addr = want_ip
                self._check_ip(net, addr)
            holder = self.index.endpoint_by_ip(addr)
            if holder is not None:
                raise Conflict(f"ip {addr} is already used by container {holder.name}")
            hw = want_mac if want_mac is not None else mac_for_ip(addr)
            for other in self.index.endpoints():
                if other.mac == hw:
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
                self.store.put(ENDPOINTS, ep_id, endpoint.model_dump(mode="json"), create=True)
            except StoreConflict:  # pragma: no cover - uuid4 collision
                raise Conflict(f"container id {ep_id} already exists") from None
            self.index.put_endpoint(endpoint)
            events.append(EndpointAdded(endpoint))
        return endpoint

    @staticmethod
    def _check_ip(net: Network, addr: ipaddress.IPv4Address) -> None:
        if addr not in net.subnet:
            raise Invalid(f"ip {addr} is outside subnet {net.subnet} of network {net.name}")
        if addr == net.subnet.network_address:
            raise Invalid(f"ip {addr} is the network address of subnet {net.subnet}")
        if addr == net.subnet.broadcast_address:
            raise Invalid(f"ip {addr} is the broadcast address of subnet {net.subnet}")
        if addr == net.gateway:
            raise Invalid(f"ip {addr} is the gateway of network {net.name}")

    def _free_address(self, net: Network) -> ipaddress.IPv4Address:
        used = {e.ip for e in self.index.endpoints(network=net.name)}
        used.add(net.gateway)
        first = int(net.subnet.network_address) + 1
        last = int(net.subnet.broadcast_address) - 1
        for value in range(first, last + 1):
            candidate = ipaddress.IPv4Address(value)
            if candidate not in used:
                return candidate
        raise Conflict(f"network {net.name} ({net.subnet}) has no free address left")

    def endpoint(self, name_or_id: str) -> Endpoint:
        endpoint = self.index.endpoint(name_or_id)
        if endpoint is None:
            raise NotFound(f"container {name_or_id} not found")
        return endpoint

    def endpoints(self, host: str | None = None, network: str | None = None) -> list[Endpoint]:
        return self.index.endpoints(host=host, network=network)

    def remove_endpoint(self, name_or_id: str) -> Endpoint:
        with self._change() as events:
            endpoint = self.endpoint(name_or_id)
            self.store.delete(ENDPOINTS, endpoint.id)
            self.index.drop_endpoint(endpoint.id)
            events.append(EndpointRemoved(endpoint))
        return endpoint
