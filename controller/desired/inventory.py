"""The inventory: validated changes to the desired state, behind one object.

`Inventory` wires the parts and offers their operations under one name, which the
API, the CLI's tests and the controller's wiring use:

- sync.py: the store and the index in step, the locks, the announcements, the
  replicas' store watch (every change runs in `StoreSync.change()`);
- topology.py: hosts, networks, endpoints;
- policy_changes.py: groups, pair policies, firewall rules, published ports;
- validation.py: the checks of the values, errors.py: the errors they raise.

Deleting a network is the one change that spans two parts (its groups and rules
go with it), so it is composed here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.desired.events import Change, NetworkRemoved
from controller.desired.index import DesiredIndex
from controller.desired.models import Network
from controller.desired.policy_changes import PolicyChanges
from controller.desired.sync import StoreSync
from controller.desired.topology import Topology
from controller.store.base import Store


class Inventory:
    """Validated desired state, persisted in a `Store`, mirrored in `index`."""

    def __init__(
        self,
        store: Store,
        on_change: Callable[[Change], None],
        *,
        replicated: bool = False,
        index: DesiredIndex | None = None,
        watchers: Mapping[str, Callable[[dict[str, Any] | None], None]] | None = None,
    ) -> None:
        """`replicated`: other controller replicas write the same store (etcd); their
        changes arrive through the store's watch (docs/architecture.md, "Replicas").
        `index`, `watchers`: given to StoreSync (controller/desired/sync.py)."""
        self._sync = StoreSync(store, on_change, replicated=replicated, index=index,
                               watchers=watchers)
        self.store = store
        self.index = self._sync.index
        self.replicated = replicated
        # Documents that are no desired state but which replicas share through the
        # store: kind -> callback (StoreSync.watchers).
        self.watchers = self._sync.watchers
        topology = Topology(self._sync)
        policy = PolicyChanges(self._sync, topology)
        self._topology, self._policy = topology, policy

        self.register_host = topology.register_host
        self.set_host_key = topology.set_host_key
        self.remove_host = topology.remove_host
        self.host = topology.host
        self.hosts = topology.hosts

        self.create_network = topology.create_network
        self.network = topology.network
        self.networks = topology.networks
        self.set_network_external = topology.set_network_external

        self.add_endpoint = topology.add_endpoint
        self.endpoint = topology.endpoint
        self.endpoints = topology.endpoints
        self.update_endpoint = topology.update_endpoint
        self.relocate_endpoint = topology.relocate_endpoint
        self.remove_endpoint = topology.remove_endpoint

        self.group = policy.group
        self.groups = policy.groups
        self.create_group = policy.create_group
        self.delete_group = policy.delete_group
        self.add_group_member = policy.add_group_member
        self.remove_group_member = policy.remove_group_member

        self.set_pair_policy = policy.set_pair_policy
        self.set_pair_policy_audit = policy.set_pair_policy_audit
        self.pair_policy = policy.pair_policy
        self.pair_policies = policy.pair_policies
        self.clear_pair_policy = policy.clear_pair_policy

        self.add_rule = policy.add_rule
        self.set_rule_audit = policy.set_rule_audit
        self.rule = policy.rule
        self.rules = policy.rules
        self.delete_rule = policy.delete_rule

        self.publish_port = policy.publish_port
        self.published_port = policy.published_port
        self.published_ports = policy.published_ports
        self.unpublish_port = policy.unpublish_port

    def delete_network(self, name: str) -> Network:
        """Delete a network no container uses, with its rules and group memberships."""
        with self._sync.change() as events:
            network = self._topology.drop_network(name)
            self._policy.forget_network(name, events)
            events.append(NetworkRemoved(network))
        return network
