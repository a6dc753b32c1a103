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
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from controller.desired.events import (
    Change,
    EndpointAdded,
    EndpointRemoved,
    GroupChanged,
    HostRegistered,
    NetworkAdded,
    NetworkChanged,
    NetworkRemoved,
    PairPolicyChanged,
    PublishedPortAdded,
    PublishedPortRemoved,
    RulesChanged,
)
from controller.desired.index import DesiredIndex, pair_key
from controller.desired.models import (
    GATEWAY_MAC,
    Endpoint,
    FirewallRule,
    Group,
    Host,
    MacAddress,
    Name,
    Network,
    PairPolicy,
    PublishedPort,
    RuleSource,
    mac_for_ip,
    utcnow,
)
from controller.desired.replication import (
    ENDPOINTS,
    GROUPS,
    HOSTS,
    NETWORKS,
    PAIRS,
    PUBLISHED,
    RULES,
    CorruptDocument,
    apply_document,
)
from controller.store.base import Store, StoreConflict, StoreEvent, StoreUnavailable

log = logging.getLogger(__name__)

META = "meta"  # key: counter name
DPID_COUNTER = "next_dpid"
SYNC_MARK = "sync"  # a replica's catch-up mark (see Inventory._catch_up)
# How long a replica waits for its store watch to catch up before a change.
CATCH_UP_TIMEOUT = 5.0

MTU_MIN, MTU_MAX, MTU_DEFAULT = 576, 9000, 1500
PORT_PREFIX = "dl"

_R = TypeVar("_R", Host, Network, Endpoint, Group, PairPolicy, FirewallRule, PublishedPort)

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


_WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


def _check_wireguard(
    public_key: str | None,
    endpoint: str | None,
    tunnel: str | ipaddress.IPv4Address | None,
    relay: bool,
) -> dict[str, Any]:
    """The WireGuard fields of a host registration, checked (all optional)."""
    out: dict[str, Any] = {"relay": relay}
    if public_key is not None:
        if not _WG_KEY.match(public_key):
            raise Invalid(f"wg_public_key {public_key!r} is not a WireGuard public key")
        out["wg_public_key"] = public_key
    if endpoint is not None:
        ip, sep, port = endpoint.rpartition(":")
        try:
            ipaddress.IPv4Address(ip)
            ok = bool(sep) and 1 <= int(port) <= 65535
        except ValueError:
            ok = False
        if not ok:
            raise Invalid(f"wg_endpoint {endpoint!r} is not IPv4:PORT")
        out["wg_endpoint"] = endpoint
    if tunnel is not None:
        out["tunnel_address"] = _parse_address("tunnel_address", tunnel)
    return out


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


def _parse_cidr(field: str, value: str) -> ipaddress.IPv4Network:
    """An IPv4 CIDR (a bare address is a /32); host bits are refused with a hint."""
    text = str(value).strip()
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.IPv4Network(text, strict=False)
            raise Invalid(f"{field} {text} has host bits set (did you mean {fixed}?)") from None
        raise Invalid(
            f"{field} {value!r} is not an IPv4 address or CIDR (expected e.g. 192.0.2.0/24)"
        ) from None


MAX_PORTS = 32


def _parse_ports(ports: Sequence[str | int]) -> tuple[str, ...]:
    """Ports and ranges ("80", 443, "8000-8100"), checked and normalised, in order."""
    if isinstance(ports, str | int):
        ports = [ports]
    if len(ports) > MAX_PORTS:
        raise Invalid(f"ports has {len(ports)} entries, at most {MAX_PORTS} are allowed")
    found: list[str] = []
    for item in ports:
        text = str(item).strip()
        lo_text, dash, hi_text = text.partition("-")
        try:
            if isinstance(item, bool):
                raise ValueError
            lo = int(lo_text, 10)
            hi = int(hi_text, 10) if dash else lo
            if not (lo_text.isdigit() and (not dash or hi_text.isdigit())):
                raise ValueError
        except ValueError:
            raise Invalid(
                f"ports entry {item!r} is not a port or a range (expected e.g. 80 or 8000-8100)"
            ) from None
        if not 1 <= lo <= 65535 or not 1 <= hi <= 65535:
            raise Invalid(f"ports entry {text!r} is out of range 1-65535")
        if lo > hi:
            raise Invalid(f"ports entry {text!r} is an empty range (start above end)")
        norm = str(lo) if lo == hi else f"{lo}-{hi}"
        if norm not in found:
            found.append(norm)
    return tuple(found)


class Inventory:
    """Validated desired state, persisted in a `Store`, mirrored in `index`."""

    def __init__(
        self, store: Store, on_change: Callable[[Change], None], *, replicated: bool = False
    ) -> None:
        """`replicated`: other controller replicas write the same store (etcd); their
        changes arrive through the store's watch (docs/architecture.md, "Replicas")."""
        self.store = store
        self.on_change = on_change
        self.index = DesiredIndex()
        self.replicated = replicated
        self._lock = threading.Lock()  # serialises changes
        self._announce = threading.RLock()  # keeps announcements in change order
        # Replication: the newest store revision this replica wrote (its own writes
        # come back through the watch and are skipped), and the catch-up marks seen.
        self._own_high = 0
        self._marks = threading.Condition()
        self._mark_seen: object = None
        self._mark_serial = 0
        self._replica_id = uuid.uuid4().hex
        self._watch_error: str | None = None
        # Documents that are no desired state but which replicas share through the
        # store (the switch assignment, controller/cluster/masters.py): kind -> callback,
        # for every write, this replica's own included.
        self.watchers: dict[str, Callable[[dict[str, Any] | None], None]] = {}
        revision = self._load()
        if replicated:
            store.watch(revision, self._on_store_events, self._on_watch_error)

    # --- loading ---------------------------------------------------------------------
    def _load(self) -> int:
        """Fill the index from one consistent read of the store; its revision."""
        revision, docs = self.store.snapshot()
        max_dpid = 0
        for doc in docs.get(HOSTS, []):
            host = self._decode(Host, HOSTS, doc)
            self.index.put_host(host)
            max_dpid = max(max_dpid, host.dpid)
        for doc in docs.get(NETWORKS, []):
            self.index.put_network(self._decode(Network, NETWORKS, doc))
        for doc in docs.get(ENDPOINTS, []):
            self.index.put_endpoint(self._decode(Endpoint, ENDPOINTS, doc))
        for doc in docs.get(GROUPS, []):
            self.index.put_group(self._decode(Group, GROUPS, doc))
        for doc in docs.get(PAIRS, []):
            self.index.put_pair_policy(self._decode(PairPolicy, PAIRS, doc))
        for doc in docs.get(RULES, []):
            self.index.put_rule(self._decode(FirewallRule, RULES, doc))
        for doc in docs.get(PUBLISHED, []):
            self.index.put_published_port(self._decode(PublishedPort, PUBLISHED, doc))
        # Never hand out a dpid again, even if the counter record was lost.
        with self.store.exclusive():
            counter = self.store.get(META, DPID_COUNTER)
            if counter is None or int(counter.get("value", 1)) <= max_dpid:
                self.store.put(META, DPID_COUNTER, {"value": max_dpid + 1})
        return revision

    # --- replication (docs/architecture.md, "Replicas") -------------------------------
    def _on_store_events(self, events: list[StoreEvent]) -> None:
        """The store watch: another replica's changes, in revision order."""
        for ev in events:
            watcher = self.watchers.get(ev.kind)
            if watcher is not None:
                try:
                    watcher(ev.value)
                except Exception:  # the watch must go on
                    log.exception("handling a %s document failed", ev.kind)
                continue
            if ev.kind == META:
                if ev.key == SYNC_MARK and ev.value is not None:
                    with self._marks:
                        self._mark_seen = ev.value.get("mark")
                        self._marks.notify_all()
                continue
            with self._announce:
                with self._lock:
                    if ev.revision <= self._own_high:
                        continue  # this replica's own write, already in the index
                    try:
                        changes = apply_document(self.index, ev.kind, ev.key, ev.value)
                    except CorruptDocument as exc:
                        log.error("%s", exc)
                        continue
                for change in changes:
                    self._announce_one(change)

    def _on_watch_error(self, exc: Exception) -> None:
        """The watch cannot go on without a gap (etcd compacted the history it needs):
        this replica's index can no longer be trusted for changes."""
        self._watch_error = str(exc)
        log.error("the store watch stopped (%s): changes through this replica are refused "
                  "until it restarts", exc)

    def _catch_up(self) -> None:
        """Make sure the index holds every change made before this one (inside the
        store's exclusive section): write a mark and wait until the watch, which
        delivers in revision order, has brought it back."""
        if self._watch_error is not None:
            raise StoreUnavailable(
                f"this replica lost the store watch ({self._watch_error}); restart it"
            )
        self._mark_serial += 1
        mark = f"{self._replica_id}/{self._mark_serial}"
        self.store.put(META, SYNC_MARK, {"mark": mark})
        with self._marks:
            if not self._marks.wait_for(lambda: self._mark_seen == mark, CATCH_UP_TIMEOUT):
                raise StoreUnavailable(
                    f"the store watch did not catch up within {CATCH_UP_TIMEOUT:g}s"
                )

    @staticmethod
    def _decode(model: type[_R], kind: str, doc: dict[str, Any]) -> _R:
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            raise RuntimeError(f"corrupt {kind} record in the store: {doc!r}: {exc}") from exc

    @contextmanager
    def _change(self) -> Iterator[list[Change]]:
        """Run one change under the locks; announce what it appended, in order.

        The store's exclusive section serialises it with every other replica; with
        replicas, the index first catches up with what they wrote, so the change is
        validated against the latest state (writes are linearizable).
        """
        events: list[Change] = []
        with self.store.exclusive():
            if self.replicated:
                self._catch_up()
            with self._announce:
                with self._lock:
                    try:
                        yield events
                    finally:
                        if self.replicated:
                            self._own_high = self.store.revision()
                for event in events:
                    self._announce_one(event)

    def _announce_one(self, event: Change) -> None:
        try:
            self.on_change(event)
        except Exception:
            log.exception("on_change failed for %s", type(event).__name__)

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
        name = _check_name("host name", name)
        wg = _check_wireguard(wg_public_key, wg_endpoint, tunnel_address, relay)
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
            tunnel = wg.get("tunnel_address")
            for h in self.index.hosts() if tunnel is not None else ():
                if h.name != name and h.tunnel_address == tunnel:
                    raise Conflict(f"tunnel address {tunnel} is already used by host {h.name}")
            old = self.index.host(name)
            if old is not None:
                host = Host(name=name, address=addr, site=site, dpid=old.dpid, **wg)
            else:
                host = Host(name=name, address=addr, site=site, dpid=self._next_dpid(), **wg)
            self.store.put(HOSTS, name, host.model_dump(mode="json"))
            self.index.put_host(host)
            events.append(HostRegistered(host))
        return host

    def set_host_key(self, name: str, public_key: str) -> Host:
        """Record a host's new WireGuard public key (after `rotate-key`)."""
        _check_wireguard(public_key, None, None, False)
        with self._change() as events:
            old = self.host(name)
            host = old.model_copy(update={"wg_public_key": public_key})
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
        external: bool = False,
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
            network = Network(
                id=uuid.uuid4().hex, name=name, subnet=net, gateway=gw, mtu=mtu,
                external=bool(external),
            )
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
            self._forget_network_policy(name, events)
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
        """By endpoint id, name, Docker id or a unique Docker id prefix (>= 12 digits)."""
        endpoint = self.index.endpoint(name_or_id)
        if endpoint is None and len(name_or_id) >= 12:
            found = [
                e for e in self.index.endpoints()
                if e.docker_id is not None and e.docker_id.startswith(name_or_id)
            ]
            if len(found) == 1:
                endpoint = found[0]
        if endpoint is None:
            raise NotFound(f"container {name_or_id} not found")
        return endpoint

    def update_endpoint(
        self, name_or_id: str, *, name: str | None = None, docker_id: str | None = None
    ) -> Endpoint:
        """Rename an endpoint and/or record its Docker id (no datapath change)."""
        if name is not None:
            name = _check_name("container name", name)
        with self._change():
            endpoint = self.endpoint(name_or_id)
            changes: dict[str, Any] = {}
            if name is not None and name != endpoint.name:
                other = self.index.endpoint(name)
                if other is not None and other.id != endpoint.id:
                    raise Conflict(f"container {name} already exists (id {other.id})")
                changes["name"] = name
            if docker_id is not None and docker_id != endpoint.docker_id:
                changes["docker_id"] = docker_id
            if not changes:
                return endpoint
            updated = endpoint.model_copy(update=changes)
            self.store.put(ENDPOINTS, updated.id, updated.model_dump(mode="json"))
            self.index.put_endpoint(updated)
        return updated

    def relocate_endpoint(self, name_or_id: str, host: str) -> Endpoint:
        """Move an endpoint (same id, IP, MAC) to another host.

        Announced as removed + added: the core retracts every flow and route of the
        old place at once, and the new host gets the `local` route.
        """
        with self._change() as events:
            endpoint = self.endpoint(name_or_id)
            self.host(host)
            if endpoint.host == host:
                return endpoint
            moved = endpoint.model_copy(update={"host": host})
            self.store.put(ENDPOINTS, moved.id, moved.model_dump(mode="json"))
            self.index.put_endpoint(moved)
            events.append(EndpointRemoved(endpoint))
            events.append(EndpointAdded(moved))
        return moved

    def endpoints(self, host: str | None = None, network: str | None = None) -> list[Endpoint]:
        return self.index.endpoints(host=host, network=network)

    def remove_endpoint(self, name_or_id: str) -> Endpoint:
        with self._change() as events:
            endpoint = self.endpoint(name_or_id)
            self.store.delete(ENDPOINTS, endpoint.id)
            self.index.drop_endpoint(endpoint.id)
            events.append(EndpointRemoved(endpoint))
        return endpoint

    # --- policy: network options ---------------------------------------------------------
    def set_network_external(self, name: str, external: bool) -> Network:
        """Turn a network's external access (masquerade to outside daolinet) on or off."""
        with self._change() as events:
            before = self.network(name)
            if before.external == external:
                return before
            after = before.model_copy(update={"external": bool(external)})
            self.store.put(NETWORKS, name, after.model_dump(mode="json"))
            self.index.put_network(after)
            events.append(NetworkChanged(before, after))
        return after

    def _forget_network_policy(self, network: str, events: list[Change]) -> None:
        """A deleted network leaves its groups and takes its rules along (under the lock)."""
        rules = self.index.rules_for("network", network)
        for rule in rules:
            self.store.delete(RULES, rule.id)
            self.index.drop_rule(rule.id)
        if rules:
            events.append(RulesChanged("network", network, (network,)))
        for group_name in sorted(self.index.groups_of_network(network)):
            group = self.index.group(group_name)
            if group is None:  # pragma: no cover - index is consistent
                continue
            updated = group.model_copy(
                update={"networks": tuple(n for n in group.networks if n != network)}
            )
            self.store.put(GROUPS, group.name, updated.model_dump(mode="json"))
            self.index.put_group(updated)
            events.append(GroupChanged(group.name, group.networks, updated.networks))

    # --- policy: groups ------------------------------------------------------------------
    def group(self, name: str) -> Group:
        group = self.index.group(name)
        if group is None:
            raise NotFound(f"group {name} not found")
        return group

    def groups(self) -> list[Group]:
        return self.index.groups()

    def create_group(self, name: str, networks: Sequence[str] = ()) -> Group:
        name = _check_name("group name", name)
        with self._change() as events:
            if self.index.group(name) is not None:
                raise Conflict(f"group {name} already exists")
            members: list[str] = []
            for net in networks:
                self.network(net)
                if net not in members:
                    members.append(net)
            group = Group(name=name, networks=tuple(sorted(members)))
            try:
                self.store.put(GROUPS, name, group.model_dump(mode="json"), create=True)
            except StoreConflict:  # pragma: no cover - the index said it was free
                raise Conflict(f"group {name} already exists") from None
            self.index.put_group(group)
            events.append(GroupChanged(name, (), group.networks))
        return group

    def delete_group(self, name: str) -> Group:
        """Delete a group and the firewall rules on it."""
        with self._change() as events:
            group = self.group(name)
            rules = self.index.rules_for("group", name)
            for rule in rules:
                self.store.delete(RULES, rule.id)
                self.index.drop_rule(rule.id)
            self.store.delete(GROUPS, name)
            self.index.drop_group(name)
            if rules:
                events.append(RulesChanged("group", name, group.networks))
            events.append(GroupChanged(name, group.networks, ()))
        return group

    def add_group_member(self, name: str, network: str) -> Group:
        with self._change() as events:
            group = self.group(name)
            self.network(network)
            if network in group.networks:
                return group
            updated = group.model_copy(
                update={"networks": tuple(sorted((*group.networks, network)))}
            )
            self.store.put(GROUPS, name, updated.model_dump(mode="json"))
            self.index.put_group(updated)
            events.append(GroupChanged(name, group.networks, updated.networks))
        return updated

    def remove_group_member(self, name: str, network: str) -> Group:
        with self._change() as events:
            group = self.group(name)
            if network not in group.networks:
                raise NotFound(f"network {network} is not a member of group {name}")
            updated = group.model_copy(
                update={"networks": tuple(n for n in group.networks if n != network)}
            )
            self.store.put(GROUPS, name, updated.model_dump(mode="json"))
            self.index.put_group(updated)
            events.append(GroupChanged(name, group.networks, updated.networks))
        return updated

    # --- policy: pair policies -----------------------------------------------------------
    def _container_name(self, name_or_id: str) -> str:
        """The name of a container given by name or id; a name as it is if unknown."""
        endpoint = self.index.endpoint(name_or_id)
        return endpoint.name if endpoint is not None else name_or_id

    def set_pair_policy(self, a: str, b: str, action: str) -> PairPolicy:
        """`connect` (allow) or `disconnect` (deny) two containers, by name or id."""
        if action not in ("allow", "deny"):
            raise Invalid(f"action {action!r} must be allow or deny")
        with self._change() as events:
            name_a = self.endpoint(a).name
            name_b = self.endpoint(b).name
            if name_a == name_b:
                raise Invalid(f"b {b!r} is the same container as a: a pair needs two containers")
            first, second = pair_key(name_a, name_b)
            old = self.index.pair_policy(first, second)
            if old is not None and old.action == action:
                return old
            policy = PairPolicy(a=first, b=second, action=action)  # type: ignore[arg-type]
            self.store.put(PAIRS, f"{first}|{second}", policy.model_dump(mode="json"))
            self.index.put_pair_policy(policy)
            events.append(
                PairPolicyChanged(first, second, old.action if old else None, policy.action)
            )
        return policy

    def pair_policy(self, a: str, b: str) -> PairPolicy:
        name_a, name_b = self._container_name(a), self._container_name(b)
        policy = self.index.pair_policy(name_a, name_b)
        if policy is None:
            raise NotFound(f"no pair policy between {name_a} and {name_b}")
        return policy

    def pair_policies(self, container: str | None = None) -> list[PairPolicy]:
        name = None if container is None else self._container_name(container)
        return self.index.pair_policies(name)

    def clear_pair_policy(self, a: str, b: str) -> PairPolicy:
        with self._change() as events:
            policy = self.pair_policy(a, b)
            self.store.delete(PAIRS, f"{policy.a}|{policy.b}")
            self.index.drop_pair_policy(policy.a, policy.b)
            events.append(PairPolicyChanged(policy.a, policy.b, policy.action, None))
        return policy

    # --- policy: firewall rules ----------------------------------------------------------
    def _target_networks(self, target_kind: str, target: str) -> tuple[str, ...]:
        if target_kind == "network":
            self.network(target)
            return (target,)
        if target_kind == "group":
            return self.group(target).networks
        raise Invalid(f"target_kind {target_kind!r} must be network or group")

    def _rule_source(self, kind: str, value: str | None) -> RuleSource:
        value = None if value is None else str(value).strip() or None
        if kind == "any":
            if value is not None:
                raise Invalid(f"source.value {value!r} must be empty for source kind any")
            return RuleSource(kind="any")
        if value is None:
            raise Invalid(f"source.value is required for source kind {kind}")
        if kind == "cidr":
            return RuleSource(kind="cidr", value=str(_parse_cidr("source.value", value)))
        if kind == "container":
            return RuleSource(kind="container", value=self.endpoint(value).name)
        if kind == "network":
            return RuleSource(kind="network", value=self.network(value).name)
        if kind == "group":
            return RuleSource(kind="group", value=self.group(value).name)
        raise Invalid(
            f"source.kind {kind!r} must be one of container, network, group, cidr, any"
        )

    def add_rule(
        self,
        target_kind: str,
        target: str,
        action: str,
        source_kind: str = "any",
        source_value: str | None = None,
        protocol: str = "any",
        ports: Sequence[str | int] = (),
        position: int | None = None,
    ) -> FirewallRule:
        """Add an ingress rule to a network or group, at `position` (default: last)."""
        if action not in ("allow", "deny"):
            raise Invalid(f"action {action!r} must be allow or deny")
        if protocol not in ("tcp", "udp", "icmp", "any"):
            raise Invalid(f"protocol {protocol!r} must be one of tcp, udp, icmp, any")
        port_list = _parse_ports(ports)
        if port_list and protocol not in ("tcp", "udp"):
            raise Invalid(f"ports need protocol tcp or udp (protocol is {protocol})")
        with self._change() as events:
            networks = self._target_networks(target_kind, target)
            source = self._rule_source(source_kind, source_value)
            current = self.index.rules_for(target_kind, target)
            if position is None:
                position = len(current)
            elif not 0 <= position <= len(current):
                raise Invalid(
                    f"position {position} is out of range 0-{len(current)} "
                    f"({len(current)} rule(s) on {target_kind} {target})"
                )
            for rule in current[position:]:
                self._put_rule(rule.model_copy(update={"position": rule.position + 1}))
            new = FirewallRule(
                id=uuid.uuid4().hex,
                target_kind=target_kind,  # type: ignore[arg-type]
                target=target,
                position=position,
                action=action,  # type: ignore[arg-type]
                source=source,
                protocol=protocol,  # type: ignore[arg-type]
                ports=port_list,
            )
            self._put_rule(new)
            events.append(RulesChanged(target_kind, target, networks))
        return new

    def _put_rule(self, rule: FirewallRule) -> None:
        self.store.put(RULES, rule.id, rule.model_dump(mode="json"))
        self.index.put_rule(rule)

    def rule(self, rule_id: str) -> FirewallRule:
        rule = self.index.rule(rule_id)
        if rule is None:
            raise NotFound(f"firewall rule {rule_id} not found")
        return rule

    def rules(
        self, target_kind: str | None = None, target: str | None = None
    ) -> list[FirewallRule]:
        return [
            r
            for r in self.index.rules()
            if (target_kind is None or r.target_kind == target_kind)
            and (target is None or r.target == target)
        ]

    def delete_rule(self, rule_id: str) -> FirewallRule:
        with self._change() as events:
            rule = self.rule(rule_id)
            self.store.delete(RULES, rule.id)
            self.index.drop_rule(rule.id)
            for later in self.index.rules_for(rule.target_kind, rule.target):
                if later.position > rule.position:
                    self._put_rule(later.model_copy(update={"position": later.position - 1}))
            group = self.index.group(rule.target) if rule.target_kind == "group" else None
            networks = group.networks if group is not None else (rule.target,)
            events.append(RulesChanged(rule.target_kind, rule.target, networks))
        return rule

    # --- policy: published ports ---------------------------------------------------------
    def publish_port(
        self, container: str, host_port: int, container_port: int, protocol: str = "tcp"
    ) -> PublishedPort:
        """Publish `host_port/protocol` of the container's host as `container:container_port`."""
        if protocol not in ("tcp", "udp"):
            raise Invalid(f"protocol {protocol!r} must be tcp or udp")
        for field, value in (("host_port", host_port), ("container_port", container_port)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise Invalid(f"{field} {value!r} is not a port (1-65535)")
        with self._change() as events:
            endpoint = self.endpoint(container)
            taken = self.index.published_port(host_port, protocol, endpoint.host)
            if taken is not None:
                raise Conflict(
                    f"host_port {host_port}/{protocol} on host {endpoint.host} is already "
                    f"published for container {taken.container}"
                )
            port = PublishedPort(
                id=uuid.uuid4().hex,
                container=endpoint.name,
                protocol=protocol,  # type: ignore[arg-type]
                host_port=host_port,
                container_port=container_port,
            )
            self.store.put(PUBLISHED, port.id, port.model_dump(mode="json"), create=True)
            self.index.put_published_port(port)
            events.append(PublishedPortAdded(port))
        return port

    def published_port(self, port_id: str) -> PublishedPort:
        port = self.index.published_port_by_id(port_id)
        if port is None:
            raise NotFound(f"published port {port_id} not found")
        return port

    def published_ports(self, container: str | None = None) -> list[PublishedPort]:
        name = None if container is None else self._container_name(container)
        return self.index.published_ports(name)

    def unpublish_port(self, port_id: str) -> PublishedPort:
        with self._change() as events:
            port = self.published_port(port_id)
            self.store.delete(PUBLISHED, port.id)
            self.index.drop_published_port(port.id)
            events.append(PublishedPortRemoved(port))
        return port
