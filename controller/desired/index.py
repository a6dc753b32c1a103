"""In-memory index of the desired state, read by the core on every PacketIn.

The inventory persists records in the store and mirrors them here; the core only
reads.  Lookups on the hot path (endpoint by IP, endpoint by port) are dict hits.
A lock makes each call atomic because os-ken threads read while API handlers write.
"""

from __future__ import annotations

import ipaddress
import threading

from controller.desired.models import (
    Endpoint,
    FirewallRule,
    Group,
    Host,
    Network,
    PairPolicy,
    PublishedPort,
)


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The one key of an unordered pair of container names."""
    return (a, b) if a <= b else (b, a)


class DesiredIndex:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._hosts: dict[str, Host] = {}
        self._hosts_by_dpid: dict[int, Host] = {}
        self._hosts_by_address: dict[ipaddress.IPv4Address, Host] = {}
        self._hosts_by_tunnel: dict[ipaddress.IPv4Address, Host] = {}
        self._networks: dict[str, Network] = {}
        self._endpoints: dict[str, Endpoint] = {}  # by id
        self._by_name: dict[str, Endpoint] = {}
        self._by_ip: dict[ipaddress.IPv4Address, Endpoint] = {}
        self._by_port: dict[tuple[str, str], Endpoint] = {}
        # policy
        self._groups: dict[str, Group] = {}
        self._groups_of_network: dict[str, frozenset[str]] = {}
        self._pairs: dict[tuple[str, str], PairPolicy] = {}
        self._rules: dict[tuple[str, str], tuple[FirewallRule, ...]] = {}  # ordered
        self._rules_by_id: dict[str, FirewallRule] = {}
        self._published: dict[str, PublishedPort] = {}  # by id
        self._published_by_port: dict[tuple[str, int], tuple[PublishedPort, ...]] = {}

    # --- writes (inventory only) -------------------------------------------------
    def put_host(self, host: Host) -> None:
        with self._lock:
            self.drop_host(host.name)
            self._hosts[host.name] = host
            self._hosts_by_dpid[host.dpid] = host
            self._hosts_by_address[host.address] = host
            if host.tunnel_address is not None:
                self._hosts_by_tunnel[host.tunnel_address] = host

    def drop_host(self, name: str) -> None:
        with self._lock:
            old = self._hosts.pop(name, None)
            if old is not None:
                self._hosts_by_dpid.pop(old.dpid, None)
                self._hosts_by_address.pop(old.address, None)
                if old.tunnel_address is not None:
                    self._hosts_by_tunnel.pop(old.tunnel_address, None)

    def put_network(self, network: Network) -> None:
        with self._lock:
            self._networks[network.name] = network

    def drop_network(self, name: str) -> None:
        with self._lock:
            self._networks.pop(name, None)

    def put_endpoint(self, endpoint: Endpoint) -> None:
        with self._lock:
            self.drop_endpoint(endpoint.id)
            self._endpoints[endpoint.id] = endpoint
            self._by_name[endpoint.name] = endpoint
            self._by_ip[endpoint.ip] = endpoint
            self._by_port[(endpoint.host, endpoint.port)] = endpoint

    def drop_endpoint(self, endpoint_id: str) -> None:
        with self._lock:
            old = self._endpoints.pop(endpoint_id, None)
            if old is not None:
                self._by_name.pop(old.name, None)
                self._by_ip.pop(old.ip, None)
                self._by_port.pop((old.host, old.port), None)

    def put_group(self, group: Group) -> None:
        with self._lock:
            self.drop_group(group.name)
            self._groups[group.name] = group
            for net in group.networks:
                self._groups_of_network[net] = self._groups_of_network.get(
                    net, frozenset()
                ) | {group.name}

    def drop_group(self, name: str) -> None:
        with self._lock:
            old = self._groups.pop(name, None)
            if old is None:
                return
            for net in old.networks:
                left = self._groups_of_network.get(net, frozenset()) - {name}
                if left:
                    self._groups_of_network[net] = left
                else:
                    self._groups_of_network.pop(net, None)

    def put_pair_policy(self, policy: PairPolicy) -> None:
        with self._lock:
            self._pairs[pair_key(policy.a, policy.b)] = policy

    def drop_pair_policy(self, a: str, b: str) -> None:
        with self._lock:
            self._pairs.pop(pair_key(a, b), None)

    def put_rule(self, rule: FirewallRule) -> None:
        with self._lock:
            self.drop_rule(rule.id)
            self._rules_by_id[rule.id] = rule
            key = (rule.target_kind, rule.target)
            rules = [*self._rules.get(key, ()), rule]
            rules.sort(key=lambda r: (r.position, r.created_at, r.id))
            self._rules[key] = tuple(rules)

    def drop_rule(self, rule_id: str) -> None:
        with self._lock:
            old = self._rules_by_id.pop(rule_id, None)
            if old is None:
                return
            key = (old.target_kind, old.target)
            left = tuple(r for r in self._rules.get(key, ()) if r.id != rule_id)
            if left:
                self._rules[key] = left
            else:
                self._rules.pop(key, None)

    def put_published_port(self, port: PublishedPort) -> None:
        with self._lock:
            self.drop_published_port(port.id)
            self._published[port.id] = port
            key = (port.protocol, port.host_port)
            self._published_by_port[key] = (*self._published_by_port.get(key, ()), port)

    def drop_published_port(self, port_id: str) -> None:
        with self._lock:
            old = self._published.pop(port_id, None)
            if old is None:
                return
            key = (old.protocol, old.host_port)
            left = tuple(p for p in self._published_by_port.get(key, ()) if p.id != port_id)
            if left:
                self._published_by_port[key] = left
            else:
                self._published_by_port.pop(key, None)

    # --- reads --------------------------------------------------------------------
    def host(self, name: str) -> Host | None:
        with self._lock:
            return self._hosts.get(name)

    def host_by_dpid(self, dpid: int) -> Host | None:
        with self._lock:
            return self._hosts_by_dpid.get(dpid)

    def host_by_address(self, address: ipaddress.IPv4Address) -> Host | None:
        with self._lock:
            return self._hosts_by_address.get(address)

    def host_by_tunnel(self, address: ipaddress.IPv4Address) -> Host | None:
        """The host whose WireGuard tunnel address this is (the core's hot path)."""
        with self._lock:
            return self._hosts_by_tunnel.get(address)

    def hosts(self) -> list[Host]:
        with self._lock:
            return sorted(self._hosts.values(), key=lambda h: h.name)

    def network(self, name: str) -> Network | None:
        with self._lock:
            return self._networks.get(name)

    def networks(self) -> list[Network]:
        with self._lock:
            return sorted(self._networks.values(), key=lambda n: n.name)

    def endpoint(self, name_or_id: str) -> Endpoint | None:
        with self._lock:
            return self._endpoints.get(name_or_id) or self._by_name.get(name_or_id)

    def endpoint_by_ip(self, ip: ipaddress.IPv4Address) -> Endpoint | None:
        with self._lock:
            return self._by_ip.get(ip)

    def endpoint_by_port(self, host: str, port: str) -> Endpoint | None:
        with self._lock:
            return self._by_port.get((host, port))

    def endpoints(self, host: str | None = None, network: str | None = None) -> list[Endpoint]:
        with self._lock:
            found = [
                e
                for e in self._endpoints.values()
                if (host is None or e.host == host) and (network is None or e.network == network)
            ]
        return sorted(found, key=lambda e: e.name)

    # --- policy reads ---------------------------------------------------------------
    def group(self, name: str) -> Group | None:
        with self._lock:
            return self._groups.get(name)

    def groups(self) -> list[Group]:
        with self._lock:
            return sorted(self._groups.values(), key=lambda g: g.name)

    def groups_of_network(self, name: str) -> frozenset[str]:
        """Names of the groups the network is a member of."""
        with self._lock:
            return self._groups_of_network.get(name, frozenset())

    def pair_policy(self, a_name: str, b_name: str) -> PairPolicy | None:
        """The pair policy between two containers (by name, either order)."""
        with self._lock:
            return self._pairs.get(pair_key(a_name, b_name))

    def pair_policies(self, container: str | None = None) -> list[PairPolicy]:
        with self._lock:
            found = [
                p for p in self._pairs.values() if container is None or container in (p.a, p.b)
            ]
        return sorted(found, key=lambda p: (p.a, p.b))

    def rules_for(self, target_kind: str, target: str) -> tuple[FirewallRule, ...]:
        """The rules of one network or group, in evaluation order (first match wins)."""
        with self._lock:
            return self._rules.get((target_kind, target), ())

    def rule(self, rule_id: str) -> FirewallRule | None:
        with self._lock:
            return self._rules_by_id.get(rule_id)

    def rules(self) -> list[FirewallRule]:
        """Every rule, by target then position."""
        with self._lock:
            return [r for key in sorted(self._rules) for r in self._rules[key]]

    def published_port_by_id(self, port_id: str) -> PublishedPort | None:
        with self._lock:
            return self._published.get(port_id)

    def published_ports(self, container: str | None = None) -> list[PublishedPort]:
        """Published ports, of one container (by name) or all."""
        with self._lock:
            found = [
                p for p in self._published.values() if container is None or p.container == container
            ]
        return sorted(found, key=lambda p: (p.container, p.protocol, p.host_port))

    def published_port(self, host_port: int, proto: str, host: str) -> PublishedPort | None:
        """The port published as `host_port/proto` on `host` (by the container there)."""
        with self._lock:
            for port in self._published_by_port.get((proto, host_port), ()):
                ep = self._by_name.get(port.container)
                if ep is not None and ep.host == host:
                    return port
            return None
