"""In-memory index of the desired state, read by the core on every PacketIn.

The inventory persists records in the store and mirrors them here; the core only
reads.  The index publishes immutable versions (`DesiredView`): a write builds the
next version (copying only the tables it touches) and swaps it in with one
assignment, so a reader never waits and never sees half a change.  `batch()`
groups several writes into one version.  The core reads one version per handler
call (`view()`), so a handler decides on one state and can be replayed.
Lookups on the hot path (endpoint by IP, endpoint by port) are dict hits.

The endpoint tables, which grow with the containers, are persistent maps (`PMap`):
a write copies one bucket of the table, not the table (a copy of a 100,000-entry
dict per registration made registering 100,000 containers quadratic).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from controller.desired.models import (
    Endpoint,
    FirewallRule,
    Group,
    Host,
    Network,
    PairPolicy,
    PublishedPort,
)

IPv4 = ipaddress.IPv4Address
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

PMAP_BUCKETS = 256  # a write copies one bucket: about n/256 entries
_PMAP_MASK = PMAP_BUCKETS - 1  # (a power of two)


class PMap(Generic[K, V]):
    """An immutable map; `set` and `discard` return a new map that shares every
    bucket but one with this one (a small persistent map: `immutables` is not
    pinned).  Reads are a hash and two lookups."""

    __slots__ = ("_buckets", "_len")

    def __init__(self, buckets: tuple[dict[K, V], ...] | None = None, length: int = 0) -> None:
        self._buckets: tuple[dict[K, V], ...] = buckets or ({},) * PMAP_BUCKETS
        self._len = length

    # Reads inline the bucket's index: they are on the PacketIn path.
    def get(self, key: K, default: V | None = None) -> V | None:
        return self._buckets[hash(key) & _PMAP_MASK].get(key, default)

    def __getitem__(self, key: K) -> V:
        return self._buckets[hash(key) & _PMAP_MASK][key]

    def __contains__(self, key: K) -> bool:
        return key in self._buckets[hash(key) & _PMAP_MASK]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        for bucket in self._buckets:
            yield from bucket

    def values(self) -> Iterator[V]:
        for bucket in self._buckets:
            yield from bucket.values()

    def items(self) -> Iterator[tuple[K, V]]:
        for bucket in self._buckets:
            yield from bucket.items()

    def set(self, key: K, value: V) -> PMap[K, V]:
        i = hash(key) & _PMAP_MASK
        bucket = dict(self._buckets[i])
        grew = key not in bucket
        bucket[key] = value
        buckets = list(self._buckets)
        buckets[i] = bucket
        return PMap(tuple(buckets), self._len + grew)

    def discard(self, key: K) -> PMap[K, V]:
        i = hash(key) & _PMAP_MASK
        if key not in self._buckets[i]:
            return self
        bucket = dict(self._buckets[i])
        del bucket[key]
        buckets = list(self._buckets)
        buckets[i] = bucket
        return PMap(tuple(buckets), self._len - 1)


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The one key of an unordered pair of container names."""
    return (a, b) if a <= b else (b, a)


@dataclass
class _Tables:
    """One version's tables.  A published version's tables are never written again."""

    hosts: dict[str, Host] = field(default_factory=dict)
    hosts_by_dpid: dict[int, Host] = field(default_factory=dict)
    hosts_by_address: dict[IPv4, Host] = field(default_factory=dict)
    hosts_by_tunnel: dict[IPv4, Host] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: PMap[str, Endpoint] = field(default_factory=PMap)  # by id
    by_name: PMap[str, Endpoint] = field(default_factory=PMap)
    by_ip: PMap[IPv4, Endpoint] = field(default_factory=PMap)
    by_port: PMap[tuple[str, str], Endpoint] = field(default_factory=PMap)
    by_mac: PMap[str, Endpoint] = field(default_factory=PMap)
    # host -> id -> endpoint; an inner dict is replaced, never written, once published
    by_host: dict[str, dict[str, Endpoint]] = field(default_factory=dict)
    # policy
    groups: dict[str, Group] = field(default_factory=dict)
    groups_of_network: dict[str, frozenset[str]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], PairPolicy] = field(default_factory=dict)
    rules: dict[tuple[str, str], tuple[FirewallRule, ...]] = field(
        default_factory=dict
    )  # ordered
    rules_by_id: dict[str, FirewallRule] = field(default_factory=dict)
    published: dict[str, PublishedPort] = field(default_factory=dict)  # by id
    published_by_port: dict[tuple[str, int], tuple[PublishedPort, ...]] = field(
        default_factory=dict
    )


class DesiredReads:
    """The reads of the desired state, over the tables `_tables()` gives (each read
    takes them once, so it sees one version)."""

    def _tables(self) -> _Tables:
        raise NotImplementedError

    def host(self, name: str) -> Host | None:
        return self._tables().hosts.get(name)

    def host_by_dpid(self, dpid: int) -> Host | None:
        return self._tables().hosts_by_dpid.get(dpid)

    def host_by_address(self, address: IPv4) -> Host | None:
        return self._tables().hosts_by_address.get(address)

    def host_by_tunnel(self, address: IPv4) -> Host | None:
        """The host whose WireGuard tunnel address this is (the core's hot path)."""
        return self._tables().hosts_by_tunnel.get(address)

    def hosts(self) -> list[Host]:
        return sorted(self._tables().hosts.values(), key=lambda h: h.name)

    def network(self, name: str) -> Network | None:
        return self._tables().networks.get(name)

    def networks(self) -> list[Network]:
        return sorted(self._tables().networks.values(), key=lambda n: n.name)

    def endpoint(self, name_or_id: str) -> Endpoint | None:
        t = self._tables()
        return t.endpoints.get(name_or_id) or t.by_name.get(name_or_id)

    def endpoint_by_ip(self, ip: IPv4) -> Endpoint | None:
        return self._tables().by_ip.get(ip)

    def endpoint_by_port(self, host: str, port: str) -> Endpoint | None:
        return self._tables().by_port.get((host, port))

    def endpoint_by_mac(self, mac: str) -> Endpoint | None:
        return self._tables().by_mac.get(mac)

    def endpoints(self, host: str | None = None, network: str | None = None) -> list[Endpoint]:
        t = self._tables()
        candidates = t.by_host.get(host, {}).values() if host is not None else t.endpoints.values()
        found = [e for e in candidates if network is None or e.network == network]
        return sorted(found, key=lambda e: e.name)

    # --- policy reads ---------------------------------------------------------------
    def group(self, name: str) -> Group | None:
        return self._tables().groups.get(name)

    def groups(self) -> list[Group]:
        return sorted(self._tables().groups.values(), key=lambda g: g.name)

    def groups_of_network(self, name: str) -> frozenset[str]:
        """Names of the groups the network is a member of."""
        return self._tables().groups_of_network.get(name, frozenset())

    def pair_policy(self, a_name: str, b_name: str) -> PairPolicy | None:
        """The pair policy between two containers (by name, either order)."""
        return self._tables().pairs.get(pair_key(a_name, b_name))

    def pair_policies(self, container: str | None = None) -> list[PairPolicy]:
        found = [
            p
            for p in self._tables().pairs.values()
            if container is None or container in (p.a, p.b)
        ]
        return sorted(found, key=lambda p: (p.a, p.b))

    def rules_for(self, target_kind: str, target: str) -> tuple[FirewallRule, ...]:
        """The rules of one network or group, in evaluation order (first match wins)."""
        return self._tables().rules.get((target_kind, target), ())

    def rule(self, rule_id: str) -> FirewallRule | None:
        return self._tables().rules_by_id.get(rule_id)

    def rules(self) -> list[FirewallRule]:
        """Every rule, by target then position."""
        rules = self._tables().rules
        return [r for key in sorted(rules) for r in rules[key]]

    def published_port_by_id(self, port_id: str) -> PublishedPort | None:
        return self._tables().published.get(port_id)

    def published_ports(self, container: str | None = None) -> list[PublishedPort]:
        """Published ports, of one container (by name) or all."""
        found = [
            p
            for p in self._tables().published.values()
            if container is None or p.container == container
        ]
        return sorted(found, key=lambda p: (p.container, p.protocol, p.host_port))

    def published_port(self, host_port: int, proto: str, host: str) -> PublishedPort | None:
        """The port published as `host_port/proto` on `host` (by the container there)."""
        t = self._tables()
        for port in t.published_by_port.get((proto, host_port), ()):
            ep = t.by_name.get(port.container)
            if ep is not None and ep.host == host:
                return port
        return None


class DesiredView(DesiredReads):
    """One published version of the desired state: it never changes."""

    __slots__ = ("_version",)

    def __init__(self, tables: _Tables | None = None) -> None:
        self._version = tables if tables is not None else _Tables()

    def _tables(self) -> _Tables:
        return self._version


class DesiredIndex(DesiredReads):
    """The live desired state: reads see the latest published version (and a writer
    its own batch in progress); `view()` pins one version."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one writer at a time
        self._published = DesiredView()
        self._draft: _Tables | None = None  # the batch in progress (under the lock)
        self._copied: set[str] = set()  # tables the draft owns already
        self._writer: int | None = None  # the thread of the batch in progress
        self._depth = 0
        # How many times an endpoint left an address (removed, or re-put with
        # another): a cached "every address below here is taken" (the inventory's
        # free-address search) holds while this has not changed.
        self.addresses_freed = 0

    def view(self) -> DesiredView:
        """The latest published version (one attribute read: never waits)."""
        return self._published

    def _tables(self) -> _Tables:
        draft = self._draft
        if draft is not None and self._writer == threading.get_ident():
            return draft  # a writer reads what it wrote so far
        return self._published._tables()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Writes inside are published together, as one version, when it ends; if the
        outermost batch ends by an exception they are dropped (a change whose store
        transaction failed leaves the index as it was)."""
        with self._lock:
            if self._depth == 0:
                self._draft = replace(self._published._tables())
                self._copied = set()
                self._writer = threading.get_ident()
            self._depth += 1
            failed = False
            try:
                yield
            except BaseException:
                failed = True
                raise
            finally:
                self._depth -= 1
                if self._depth == 0:
                    draft, self._draft, self._writer = self._draft, None, None
                    if draft is not None and self._copied and not failed:
                        self._published = DesiredView(draft)

    def _own(self, *names: str) -> _Tables:
        """The draft, owning a copy of each named table (copy-on-write: once per
        table and batch, so a published version is never written)."""
        draft = self._draft
        assert draft is not None, "index writes run inside batch()"
        for name in names:
            if name not in self._copied:
                self._copied.add(name)
                setattr(draft, name, dict(getattr(draft, name)))
        return draft

    # --- writes (inventory only) -------------------------------------------------
    def put_host(self, host: Host) -> None:
        with self.batch():
            self.drop_host(host.name)
            t = self._own("hosts", "hosts_by_dpid", "hosts_by_address", "hosts_by_tunnel")
            t.hosts[host.name] = host
            t.hosts_by_dpid[host.dpid] = host
            t.hosts_by_address[host.address] = host
            if host.tunnel_address is not None:
                t.hosts_by_tunnel[host.tunnel_address] = host

    def drop_host(self, name: str) -> None:
        with self.batch():
            t = self._own("hosts", "hosts_by_dpid", "hosts_by_address", "hosts_by_tunnel")
            old = t.hosts.pop(name, None)
            if old is not None:
                t.hosts_by_dpid.pop(old.dpid, None)
                t.hosts_by_address.pop(old.address, None)
                if old.tunnel_address is not None:
                    t.hosts_by_tunnel.pop(old.tunnel_address, None)

    def put_network(self, network: Network) -> None:
        with self.batch():
            self._own("networks").networks[network.name] = network

    def drop_network(self, name: str) -> None:
        with self.batch():
            self._own("networks").networks.pop(name, None)

    def put_endpoint(self, endpoint: Endpoint) -> None:
        with self.batch():
            old = self._drop_endpoint(endpoint.id)
            if old is not None and old.ip != endpoint.ip:
                self.addresses_freed += 1
            t = self._own("by_host")
            t.endpoints = t.endpoints.set(endpoint.id, endpoint)
            t.by_name = t.by_name.set(endpoint.name, endpoint)
            t.by_ip = t.by_ip.set(endpoint.ip, endpoint)
            t.by_port = t.by_port.set((endpoint.host, endpoint.port), endpoint)
            t.by_mac = t.by_mac.set(endpoint.mac, endpoint)
            t.by_host[endpoint.host] = {**t.by_host.get(endpoint.host, {}),
                                        endpoint.id: endpoint}

    def drop_endpoint(self, endpoint_id: str) -> None:
        with self.batch():
            if self._drop_endpoint(endpoint_id) is not None:
                self.addresses_freed += 1

    def _drop_endpoint(self, endpoint_id: str) -> Endpoint | None:
        t = self._own("by_host")  # the persistent tables need no copy
        old = t.endpoints.get(endpoint_id)
        if old is None:
            return None
        t.endpoints = t.endpoints.discard(endpoint_id)
        t.by_name = t.by_name.discard(old.name)
        t.by_ip = t.by_ip.discard(old.ip)
        t.by_port = t.by_port.discard((old.host, old.port))
        if t.by_mac.get(old.mac) is old:
            t.by_mac = t.by_mac.discard(old.mac)
        left = {k: e for k, e in t.by_host.get(old.host, {}).items() if k != endpoint_id}
        if left:
            t.by_host[old.host] = left
        else:
            t.by_host.pop(old.host, None)
        return old

    def put_group(self, group: Group) -> None:
        with self.batch():
            self.drop_group(group.name)
            t = self._own("groups", "groups_of_network")
            t.groups[group.name] = group
            for net in group.networks:
                t.groups_of_network[net] = t.groups_of_network.get(net, frozenset()) | {
                    group.name
                }

    def drop_group(self, name: str) -> None:
        with self.batch():
            t = self._own("groups", "groups_of_network")
            old = t.groups.pop(name, None)
            if old is None:
                return
            for net in old.networks:
                left = t.groups_of_network.get(net, frozenset()) - {name}
                if left:
                    t.groups_of_network[net] = left
                else:
                    t.groups_of_network.pop(net, None)

    def put_pair_policy(self, policy: PairPolicy) -> None:
        with self.batch():
            self._own("pairs").pairs[pair_key(policy.a, policy.b)] = policy

    def drop_pair_policy(self, a: str, b: str) -> None:
        with self.batch():
            self._own("pairs").pairs.pop(pair_key(a, b), None)

    def put_rule(self, rule: FirewallRule) -> None:
        with self.batch():
            self.drop_rule(rule.id)
            t = self._own("rules", "rules_by_id")
            t.rules_by_id[rule.id] = rule
            key = (rule.target_kind, rule.target)
            rules = [*t.rules.get(key, ()), rule]
            rules.sort(key=lambda r: (r.position, r.created_at, r.id))
            t.rules[key] = tuple(rules)

    def drop_rule(self, rule_id: str) -> None:
        with self.batch():
            t = self._own("rules", "rules_by_id")
            old = t.rules_by_id.pop(rule_id, None)
            if old is None:
                return
            key = (old.target_kind, old.target)
            left = tuple(r for r in t.rules.get(key, ()) if r.id != rule_id)
            if left:
                t.rules[key] = left
            else:
                t.rules.pop(key, None)

    def put_published_port(self, port: PublishedPort) -> None:
        with self.batch():
            self.drop_published_port(port.id)
            t = self._own("published", "published_by_port")
            t.published[port.id] = port
            key = (port.protocol, port.host_port)
            t.published_by_port[key] = (*t.published_by_port.get(key, ()), port)

    def drop_published_port(self, port_id: str) -> None:
        with self.batch():
            t = self._own("published", "published_by_port")
            old = t.published.pop(port_id, None)
            if old is None:
                return
            key = (old.protocol, old.host_port)
            left = tuple(p for p in t.published_by_port.get(key, ()) if p.id != port_id)
            if left:
                t.published_by_port[key] = left
            else:
                t.published_by_port.pop(key, None)

