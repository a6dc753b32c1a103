"""The index from the store's documents as other controller replicas write them
(`apply_document`; all of them at start: load.py), and the store's kinds.

Every replica keeps the whole desired state in its `DesiredIndex`.  Its own changes
go through `Inventory`, which derives the events it announces from the operation.
Changes made by another replica reach it only as store documents (etcd watch):
`apply_document()` puts such a document into the index and derives the same events
the writing replica announced, from the difference between the old and the new
record.  So every replica's core reacts to a policy change made through any replica
exactly as if it had been made through its own API.

A document equal to what the index holds changes nothing and announces nothing
(the replica's own writes come back through the watch too).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller.desired.errors import CorruptDocument
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
from controller.desired.index import DesiredIndex
from controller.desired.models import (
    Endpoint,
    FirewallRule,
    Group,
    Host,
    Network,
    PairPolicy,
    PublishedPort,
)

# Store kinds (the inventory writes them: topology.py, policy_changes.py).
HOSTS = "host"  # key: host name
NETWORKS = "network"  # key: network name
ENDPOINTS = "endpoint"  # key: endpoint id
GROUPS = "group"  # key: group name
PAIRS = "pair"  # key: "a|b" (container names, a < b)
RULES = "rule"  # key: firewall rule id
PUBLISHED = "published"  # key: published port id
META = "meta"  # key: counter name (or the replicas' catch-up mark, sync.py)
DPID_COUNTER = "next_dpid"


M = TypeVar("M", bound=BaseModel)


def _same(old: BaseModel | None, doc: dict[str, Any] | None) -> bool:
    if old is None or doc is None:
        return old is None and doc is None
    return bool(old.model_dump(mode="json") == doc)


def decode(model: type[M], kind: str, doc: dict[str, Any], key: str | None = None) -> M:
    """A store document as its record; `CorruptDocument` names it (by key if known)."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        named = repr(key) if key is not None else repr(doc)
        raise CorruptDocument(f"corrupt {kind} record {named} in the store: {exc}") from exc


def apply_document(
    index: DesiredIndex, kind: str, key: str, doc: dict[str, Any] | None
) -> list[Change]:
    """Bring `index` in line with one document (None: deleted); the events it makes."""
    handler = _HANDLERS.get(kind)
    if handler is None:
        return []  # counters, replica records: not part of the index
    return handler(index, key, doc)


def _host(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    old = index.host(key)
    if _same(old, doc):
        return []
    if doc is None:
        index.drop_host(key)
        return []  # hosts are never deleted through the API; nothing listens for it
    host = decode(Host, HOSTS, doc, key)
    index.put_host(host)
    return [HostRegistered(host)]


def _network(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    old = index.network(key)
    if _same(old, doc):
        return []
    if doc is None:
        assert old is not None
        index.drop_network(key)
        return [NetworkRemoved(old)]
    new = decode(Network, NETWORKS, doc, key)
    index.put_network(new)
    if old is None:
        return [NetworkAdded(new)]
    if old.id != new.id or old.subnet != new.subnet:
        return [NetworkRemoved(old), NetworkAdded(new)]  # deleted and made again
    return [NetworkChanged(old, new)]


def _endpoint(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    old = index.endpoint(key)
    if old is not None and old.id != key:
        old = None  # `key` matched a name, not an id
    if _same(old, doc):
        return []
    if doc is None:
        assert old is not None
        index.drop_endpoint(key)
        return [EndpointRemoved(old)]
    new = decode(Endpoint, ENDPOINTS, doc, key)
    index.put_endpoint(new)
    if old is None:
        return [EndpointAdded(new)]
    if (old.host, old.ip, old.mac, old.port, old.network) != (
        new.host, new.ip, new.mac, new.port, new.network
    ):
        return [EndpointRemoved(old), EndpointAdded(new)]  # moved (relocate)
    return []  # renamed or its Docker id recorded: no datapath change


def _group(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    old = index.group(key)
    if _same(old, doc):
        return []
    before = old.networks if old is not None else ()
    if doc is None:
        index.drop_group(key)
        return [GroupChanged(key, before, ())]
    new = decode(Group, GROUPS, doc, key)
    index.put_group(new)
    return [GroupChanged(key, before, new.networks)]


def _pair(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    a, _, b = key.partition("|")
    old = index.pair_policy(a, b)
    if _same(old, doc):
        return []
    before = old.action if old is not None else None
    if doc is None:
        index.drop_pair_policy(a, b)
        return [PairPolicyChanged(a, b, before, None)]
    new = decode(PairPolicy, PAIRS, doc, key)
    index.put_pair_policy(new)
    return [PairPolicyChanged(new.a, new.b, before, new.action)]


def _rule_networks(index: DesiredIndex, rule: FirewallRule) -> tuple[str, ...]:
    if rule.target_kind == "group":
        group = index.group(rule.target)
        return group.networks if group is not None else ()
    return (rule.target,)


def _rule(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    old = index.rule(key)
    if _same(old, doc):
        return []
    events: list[Change] = []
    if old is not None:
        index.drop_rule(key)
        events.append(RulesChanged(old.target_kind, old.target, _rule_networks(index, old)))
    if doc is not None:
        new = decode(FirewallRule, RULES, doc, key)
        index.put_rule(new)
        change = RulesChanged(new.target_kind, new.target, _rule_networks(index, new))
        if change not in events:
            events.append(change)
    return events


def _published(index: DesiredIndex, key: str, doc: dict[str, Any] | None) -> list[Change]:
    old = index.published_port_by_id(key)
    if _same(old, doc):
        return []
    events: list[Change] = []
    if old is not None:
        index.drop_published_port(key)
        events.append(PublishedPortRemoved(old))
    if doc is not None:
        new = decode(PublishedPort, PUBLISHED, doc, key)
        index.put_published_port(new)
        events.append(PublishedPortAdded(new))
    return events


_HANDLERS = {
    HOSTS: _host,
    NETWORKS: _network,
    ENDPOINTS: _endpoint,
    GROUPS: _group,
    PAIRS: _pair,
    RULES: _rule,
    PUBLISHED: _published,
}
