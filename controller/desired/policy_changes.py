"""Policy changes: groups, pair policies, firewall rules and published ports.

What policy.py decides from; changed here, each inside `StoreSync.change()`
(sync.py) like the topology it names (containers, networks, groups by name).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from controller.desired.errors import Conflict, Invalid, NotFound
from controller.desired.events import (
    Change,
    GroupChanged,
    PairPolicyChanged,
    PublishedPortAdded,
    PublishedPortRemoved,
    RulesChanged,
)
from controller.desired.index import pair_key
from controller.desired.models import FirewallRule, Group, PairPolicy, PublishedPort, RuleSource
from controller.desired.replication import GROUPS, PAIRS, PUBLISHED, RULES
from controller.desired.sync import StoreSync
from controller.desired.topology import Topology
from controller.desired.validation import (
    check_action,
    check_audit,
    check_name,
    check_port,
    parse_cidr,
    parse_ports,
)
from controller.store.base import StoreConflict


class PolicyChanges:
    """The changes and lookups of the policy records."""

    def __init__(self, sync: StoreSync, topology: Topology) -> None:
        self._sync = sync
        self._store = sync.store
        self._index = sync.index
        self._topology = topology

    # --- groups ------------------------------------------------------------------------
    def group(self, name: str) -> Group:
        group = self._index.group(name)
        if group is None:
            raise NotFound(f"group {name} not found")
        return group

    def groups(self) -> list[Group]:
        return self._index.groups()

    def create_group(self, name: str, networks: Sequence[str] = ()) -> Group:
        name = check_name("group name", name)
        with self._sync.change() as events:
            if self._index.group(name) is not None:
                raise Conflict(f"group {name} already exists")
            members: list[str] = []
            for net in networks:
                self._topology.network(net)
                if net not in members:
                    members.append(net)
            group = Group(name=name, networks=tuple(sorted(members)))
            try:
                self._store.put(GROUPS, name, group.model_dump(mode="json"), create=True)
            except StoreConflict:  # pragma: no cover - the index said it was free
                raise Conflict(f"group {name} already exists") from None
            self._index.put_group(group)
            events.append(GroupChanged(name, (), group.networks))
        return group

    def delete_group(self, name: str) -> Group:
        """Delete a group and the firewall rules on it."""
        with self._sync.change() as events:
            group = self.group(name)
            rules = self._index.rules_for("group", name)
            for rule in rules:
                self._drop_rule(rule)
            self._store.delete(GROUPS, name)
            self._index.drop_group(name)
            if rules:
                events.append(RulesChanged("group", name, group.networks))
            events.append(GroupChanged(name, group.networks, ()))
        return group

    def add_group_member(self, name: str, network: str) -> Group:
        with self._sync.change() as events:
            group = self.group(name)
            self._topology.network(network)
            if network in group.networks:
                return group
            return self._put_members(group, tuple(sorted((*group.networks, network))), events)

    def remove_group_member(self, name: str, network: str) -> Group:
        with self._sync.change() as events:
            group = self.group(name)
            if network not in group.networks:
                raise NotFound(f"network {network} is not a member of group {name}")
            return self._put_members(group, _without(group.networks, network), events)

    def _put_members(
        self, group: Group, networks: tuple[str, ...], events: list[Change]
    ) -> Group:
        """Write `group` with its new member networks (inside a change)."""
        updated = group.model_copy(update={"networks": networks})
        self._store.put(GROUPS, group.name, updated.model_dump(mode="json"))
        self._index.put_group(updated)
        events.append(GroupChanged(group.name, group.networks, updated.networks))
        return updated

    def forget_network(self, network: str, events: list[Change]) -> None:
        """A deleted network leaves its groups and takes its rules along (inside the
        change that deletes it, Inventory.delete_network)."""
        rules = self._index.rules_for("network", network)
        for rule in rules:
            self._drop_rule(rule)
        if rules:
            events.append(RulesChanged("network", network, (network,)))
        for group_name in sorted(self._index.groups_of_network(network)):
            group = self._index.group(group_name)
            if group is None:  # pragma: no cover - index is consistent
                continue
            self._put_members(group, _without(group.networks, network), events)

    # --- pair policies -----------------------------------------------------------------
    def _container_name(self, name_or_id: str) -> str:
        """The name of a container given by name or id; a name as it is if unknown."""
        endpoint = self._index.endpoint(name_or_id)
        return endpoint.name if endpoint is not None else name_or_id

    def set_pair_policy(self, a: str, b: str, action: str, audit: bool = False) -> PairPolicy:
        """`connect` (allow) or `disconnect` (deny) two containers, by name or id;
        `audit`: in audit mode (docs/architecture.md, "Audit mode")."""
        check_action(action)
        check_audit(audit)
        with self._sync.change() as events:
            name_a = self._topology.endpoint(a).name
            name_b = self._topology.endpoint(b).name
            if name_a == name_b:
                raise Invalid(f"b {b!r} is the same container as a: a pair needs two containers")
            first, second = pair_key(name_a, name_b)
            old = self._index.pair_policy(first, second)
            if old is not None and old.action == action and old.audit == audit:
                return old
            policy = PairPolicy(
                a=first, b=second, action=action, audit=audit  # type: ignore[arg-type]
            )
            self._put_pair_policy(policy, old, events)
        return policy

    def set_pair_policy_audit(self, a: str, b: str, audit: bool) -> PairPolicy:
        """Put a pair policy in audit mode, or enforce it (`audit` False): one write,
        so from the next decision on it decides, and what it denies is revoked."""
        check_audit(audit)
        with self._sync.change() as events:
            old = self.pair_policy(a, b)
            if old.audit == audit:
                return old
            policy = old.model_copy(update={"audit": audit})
            self._put_pair_policy(policy, old, events)
        return policy

    def _put_pair_policy(
        self, policy: PairPolicy, old: PairPolicy | None, events: list[Change]
    ) -> None:
        self._store.put(PAIRS, f"{policy.a}|{policy.b}", policy.model_dump(mode="json"))
        self._index.put_pair_policy(policy)
        events.append(
            PairPolicyChanged(policy.a, policy.b, old.action if old else None, policy.action)
        )

    def pair_policy(self, a: str, b: str) -> PairPolicy:
        name_a, name_b = self._container_name(a), self._container_name(b)
        policy = self._index.pair_policy(name_a, name_b)
        if policy is None:
            raise NotFound(f"no pair policy between {name_a} and {name_b}")
        return policy

    def pair_policies(self, container: str | None = None) -> list[PairPolicy]:
        name = None if container is None else self._container_name(container)
        return self._index.pair_policies(name)

    def clear_pair_policy(self, a: str, b: str) -> PairPolicy:
        with self._sync.change() as events:
            policy = self.pair_policy(a, b)
            self._store.delete(PAIRS, f"{policy.a}|{policy.b}")
            self._index.drop_pair_policy(policy.a, policy.b)
            events.append(PairPolicyChanged(policy.a, policy.b, policy.action, None))
        return policy

    # --- firewall rules ----------------------------------------------------------------
    def _target_networks(self, target_kind: str, target: str) -> tuple[str, ...]:
        if target_kind == "network":
            self._topology.network(target)
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
            return RuleSource(kind="cidr", value=str(parse_cidr("source.value", value)))
        if kind == "container":
            return RuleSource(kind="container", value=self._topology.endpoint(value).name)
        if kind == "network":
            return RuleSource(kind="network", value=self._topology.network(value).name)
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
        audit: bool = False,
    ) -> FirewallRule:
        """Add an ingress rule to a network or group, at `position` (default: last);
        `audit`: in audit mode (docs/architecture.md, "Audit mode")."""
        check_action(action)
        check_audit(audit)
        if protocol not in ("tcp", "udp", "icmp", "any"):
            raise Invalid(f"protocol {protocol!r} must be one of tcp, udp, icmp, any")
        port_list = parse_ports(ports)
        if port_list and protocol not in ("tcp", "udp"):
            raise Invalid(f"ports need protocol tcp or udp (protocol is {protocol})")
        with self._sync.change() as events:
            networks = self._target_networks(target_kind, target)
            source = self._rule_source(source_kind, source_value)
            current = self._index.rules_for(target_kind, target)
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
                audit=audit,
            )
            self._put_rule(new)
            events.append(RulesChanged(target_kind, target, networks))
        return new

    def set_rule_audit(self, rule_id: str, audit: bool) -> FirewallRule:
        """Put a rule in audit mode, or enforce it (`audit` False): one write, so
        from the next decision on it decides, and what it denies is revoked."""
        check_audit(audit)
        with self._sync.change() as events:
            rule = self.rule(rule_id)
            if rule.audit == audit:
                return rule
            rule = rule.model_copy(update={"audit": audit})
            self._put_rule(rule)
            events.append(RulesChanged(rule.target_kind, rule.target, self._rule_networks(rule)))
        return rule

    def _rule_networks(self, rule: FirewallRule) -> tuple[str, ...]:
        group = self._index.group(rule.target) if rule.target_kind == "group" else None
        return group.networks if group is not None else (rule.target,)

    def _put_rule(self, rule: FirewallRule) -> None:
        self._store.put(RULES, rule.id, rule.model_dump(mode="json"))
        self._index.put_rule(rule)

    def _drop_rule(self, rule: FirewallRule) -> None:
        self._store.delete(RULES, rule.id)
        self._index.drop_rule(rule.id)

    def rule(self, rule_id: str) -> FirewallRule:
        rule = self._index.rule(rule_id)
        if rule is None:
            raise NotFound(f"firewall rule {rule_id} not found")
        return rule

    def rules(
        self, target_kind: str | None = None, target: str | None = None
    ) -> list[FirewallRule]:
        return [
            r
            for r in self._index.rules()
            if (target_kind is None or r.target_kind == target_kind)
            and (target is None or r.target == target)
        ]

    def delete_rule(self, rule_id: str) -> FirewallRule:
        with self._sync.change() as events:
            rule = self.rule(rule_id)
            self._drop_rule(rule)
            for later in self._index.rules_for(rule.target_kind, rule.target):
                if later.position > rule.position:
                    self._put_rule(later.model_copy(update={"position": later.position - 1}))
            events.append(RulesChanged(rule.target_kind, rule.target, self._rule_networks(rule)))
        return rule

    # --- published ports ---------------------------------------------------------------
    def publish_port(
        self, container: str, host_port: int, container_port: int, protocol: str = "tcp"
    ) -> PublishedPort:
        """Publish `host_port/protocol` of the container's host as `container:container_port`."""
        if protocol not in ("tcp", "udp"):
            raise Invalid(f"protocol {protocol!r} must be tcp or udp")
        check_port("host_port", host_port)
        check_port("container_port", container_port)
        with self._sync.change() as events:
            endpoint = self._topology.endpoint(container)
            if self._topology.network(endpoint.network).internal:
                raise Conflict(
                    f"container {endpoint.name} is on internal network {endpoint.network}, "
                    "which publishes no ports"
                )
            taken = self._index.published_port(host_port, protocol, endpoint.host)
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
            self._store.put(PUBLISHED, port.id, port.model_dump(mode="json"), create=True)
            self._index.put_published_port(port)
            events.append(PublishedPortAdded(port))
        return port

    def published_port(self, port_id: str) -> PublishedPort:
        port = self._index.published_port_by_id(port_id)
        if port is None:
            raise NotFound(f"published port {port_id} not found")
        return port

    def published_ports(self, container: str | None = None) -> list[PublishedPort]:
        name = None if container is None else self._container_name(container)
        return self._index.published_ports(name)

    def unpublish_port(self, port_id: str) -> PublishedPort:
        with self._sync.change() as events:
            port = self.published_port(port_id)
            self._store.delete(PUBLISHED, port.id)
            self._index.drop_published_port(port.id)
            events.append(PublishedPortRemoved(port))
        return port


def _without(networks: tuple[str, ...], network: str) -> tuple[str, ...]:
    return tuple(n for n in networks if n != network)
