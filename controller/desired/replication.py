"""The index from the store's documents: all of them at start (`load_index`), then one
at a time as other controller replicas write them (`apply_document`); the store's kinds.

## At start: the schema version, and bad records repaired or set aside

One bad record must not keep a controller from starting (a crash loop that no API call
can fix).  At load, under the store's exclusive section:

- the store's schema version is written if absent (a new store) or older (migrated;
  see SCHEMA_VERSION), and a store of a newer version is refused
  (`StoreSchemaTooNew`: this controller would misread it);
- a record that does not decode (no JSON object, or refused by its model) or that
  names what does not exist (a container on a missing network or host, a firewall
  rule on a missing network or group) is **set aside**: moved to kind `quarantine`,
  key `KIND/KEY`, with the reason, for the operator to inspect (one warning line);
- a group that lists a missing network is **repaired**: the member is dropped and the
  group written back (one warning line), so a new network of that name does not
  silently join it; firewall rule positions with gaps or repeats are renumbered;

all in one store transaction, so a crash during the repair repairs again at the next
start.  (docs/architecture.md, "Store schema and repair at load".)

## Then: the documents other replicas write

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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller.desired.errors import CorruptDocument, StoreSchemaTooNew
from controller.desired.events import (
    Change,
    EndpointAdded,
    EndpointRemoved,
    EndpointRenamed,
    GroupChanged,
    HostRegistered,
    HostRemoved,
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
from controller.store.base import UNREADABLE, Documents, Store

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
        assert old is not None
        index.drop_host(key)
        return [HostRemoved(old)]
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
    if _names(old) != _names(new):
        return [EndpointRenamed(old, new)]  # no datapath change; names follow
    return []  # its Docker id recorded: no change anywhere


def _names(ep: Endpoint) -> tuple[str, tuple[str, ...], str | None]:
    return ep.name, ep.aliases, ep.hostname


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


# --- a replica whose watch lost history ---------------------------------------------

# Parents before children (an endpoint needs its network and host), children gone first.
_RESYNC_ORDER = (HOSTS, NETWORKS, GROUPS, ENDPOINTS, PAIRS, RULES, PUBLISHED)


def _index_keys(index: DesiredIndex, kind: str) -> set[str]:
    """The keys the index holds of one kind (as the store keys them, see _KINDS)."""
    records: dict[str, list[Any]] = {
        HOSTS: index.hosts(), NETWORKS: index.networks(), ENDPOINTS: index.endpoints(),
        GROUPS: index.groups(), PAIRS: index.pair_policies(), RULES: index.rules(),
        PUBLISHED: index.published_ports(),
    }
    _, key_of = _KINDS[kind]
    return {key_of(r) for r in records[kind]}


def resync_index(index: DesiredIndex, docs: Documents) -> list[Change]:
    """Bring `index` in line with a whole snapshot of the store, as if every change
    since the index was last in step had come through the watch: each document that
    differs is applied, each record the snapshot lacks is deleted; the events of that
    difference.  For a replica whose watch lost the history it needed (etcd compacted
    it): reloading, instead of refusing changes until restarted.  A document that does
    not decode is left out here (the next start sets it aside)."""
    wanted: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, (model, key_of) in _KINDS.items():
        by_key: dict[str, dict[str, Any]] = {}
        for doc in docs.get(kind, []):
            if UNREADABLE in doc:
                continue
            try:
                by_key[key_of(model.model_validate(doc))] = doc
            except ValidationError:
                continue
        wanted[kind] = by_key
    changes: list[Change] = []
    for kind in _RESYNC_ORDER:
        for key, doc in sorted(wanted[kind].items()):
            try:
                changes += apply_document(index, kind, key, doc)
            except CorruptDocument as exc:
                log.error("%s", exc)
    for kind in reversed(_RESYNC_ORDER):
        for key in sorted(_index_keys(index, kind) - wanted[kind].keys()):
            changes += apply_document(index, kind, key, None)
    return changes


# --- at start --------------------------------------------------------------------

log = logging.getLogger(__name__)

# The layout of the stored documents this controller reads and writes.  Raise it with
# a change that older controllers would misread, and say in docs/architecture.md
# ("Store schema and repair at load") how a store of the older version is migrated.
#
# 2: pair policies and firewall rules may carry `audit` (docs/architecture.md,
# "Audit mode").  A version-1 controller would ignore it and enforce an audited
# rule, so it must refuse such a store; a version-1 store migrates as it is (its
# records have no `audit`: they load as enforced), only `meta/schema` is rewritten.
SCHEMA_VERSION = 2
SCHEMA = "schema"  # key of kind META: {"version": N}, written at first use
QUARANTINE = "quarantine"  # kind of the records set aside, key "KIND/KEY"

# Each kind's model and how the inventory keys its records.
_KINDS: dict[str, tuple[type[BaseModel], Callable[[Any], str]]] = {
    HOSTS: (Host, lambda r: r.name),
    NETWORKS: (Network, lambda r: r.name),
    ENDPOINTS: (Endpoint, lambda r: r.id),
    GROUPS: (Group, lambda r: r.name),
    PAIRS: (PairPolicy, lambda r: f"{r.a}|{r.b}"),
    RULES: (FirewallRule, lambda r: r.id),
    PUBLISHED: (PublishedPort, lambda r: r.id),
}


@dataclass
class _Loaded:
    """The decoded records by kind and key, and what load must write back."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (kind, key) -> (the stored document, why it is set aside)
    aside: dict[tuple[str, str], tuple[dict[str, Any], str]] = field(default_factory=dict)
    repaired: dict[tuple[str, str], BaseModel] = field(default_factory=dict)


def load_index(store: Store, index: DesiredIndex) -> int:
    """Check the schema version, fill `index` from one consistent read of the store
    (repairing or setting aside bad records, see the module docstring); the revision
    the index is as of."""
    with store.exclusive():
        schema = store.get(META, SCHEMA)
        if schema is not None:
            check_schema(schema)
        revision, docs = store.snapshot()
        loaded = _decode(store, docs)
        _check_references(loaded)
        with store.transaction():
            if schema is None or schema["version"] < SCHEMA_VERSION:  # new, or older
                store.put(META, SCHEMA, {"version": SCHEMA_VERSION})
            _write_back(store, loaded)
            _keep_dpid_counter(store, loaded)
    with index.batch():  # one version (and each table copied once, not per record)
        _fill(index, loaded)
    # The watch of a replica starts after `revision`: the writes above come back
    # through it and change nothing (the index holds them already).
    return revision


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse a store written by a newer controller, or whose schema record this one
    cannot read (StoreSchemaTooNew)."""
    version = schema.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreSchemaTooNew(
            f"the store's schema version {version!r} (record {META}/{SCHEMA}) is not one "
            f"this controller knows: it reads and writes version {SCHEMA_VERSION}"
        )
    if version > SCHEMA_VERSION:
        raise StoreSchemaTooNew(
            f"the store has schema version {version}, newer than this controller's "
            f"{SCHEMA_VERSION}: run a controller of version {version} or newer "
            "(docs/architecture.md, \"Store schema and repair at load\")"
        )


def _decode(store: Store, docs: Documents) -> _Loaded:
    """Every record of the index's kinds, decoded; what does not decode set aside."""
    loaded = _Loaded()
    for kind, (model, key_of) in _KINDS.items():
        records: dict[str, Any] = {}
        bad: list[tuple[dict[str, Any], str]] = []
        for doc in docs.get(kind, []):
            if UNREADABLE in doc:
                bad.append((doc, "its stored text is not a JSON object"))
                continue
            try:
                record = model.model_validate(doc)
            except ValidationError as exc:
                bad.append((doc, _first_error(exc)))
                continue
            records[key_of(record)] = record
        if bad:  # the keys of the documents that did not decode: one more read
            keys = {_fingerprint(doc): key for key, doc in store.items(kind)}
            for doc, reason in bad:
                key = keys.get(_fingerprint(doc))
                if key is not None:
                    loaded.aside[(kind, key)] = (doc, reason)
                    records.pop(key, None)
        loaded.records[kind] = records
    return loaded


def _first_error(exc: ValidationError) -> str:
    """One line for a model's refusal: the first wrong field and why."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "the record"
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return f"field {where}: {first['msg']}{more}"


def _fingerprint(doc: dict[str, Any]) -> str:
    return repr(sorted(doc.items(), key=lambda item: item[0]))


def _check_references(loaded: _Loaded) -> None:
    """Set aside or repair the records that name what does not exist."""
    r = loaded.records
    for key, ep in sorted(r[ENDPOINTS].items()):
        if ep.network not in r[NETWORKS] or ep.host not in r[HOSTS]:
            missing = (f"network {ep.network!r}" if ep.network not in r[NETWORKS]
                       else f"host {ep.host!r}")
            _set_aside(loaded, ENDPOINTS, key, ep, f"it names the missing {missing}")
    for key, group in sorted(r[GROUPS].items()):
        gone = [n for n in group.networks if n not in r[NETWORKS]]
        if gone:
            fixed = group.model_copy(
                update={"networks": tuple(n for n in group.networks if n in r[NETWORKS])}
            )
            r[GROUPS][key] = loaded.repaired[(GROUPS, key)] = fixed
            log.warning("store record group %r repaired: dropped its member network(s) %s, "
                        "which do not exist", key, ", ".join(gone))
    for key, rule in sorted(r[RULES].items()):
        targets = r[NETWORKS] if rule.target_kind == "network" else r[GROUPS]
        if rule.target not in targets:
            _set_aside(loaded, RULES, key, rule,
                       f"its target {rule.target_kind} {rule.target!r} does not exist")
    _renumber_rules(loaded)


def _set_aside(loaded: _Loaded, kind: str, key: str, record: BaseModel, reason: str) -> None:
    del loaded.records[kind][key]
    loaded.aside[(kind, key)] = (record.model_dump(mode="json"), reason)


def _renumber_rules(loaded: _Loaded) -> None:
    """Positions 0..n-1 on every target (a rule set aside, or a half shift written by
    a controller before atomic changes, leaves gaps or repeats)."""
    by_target: dict[tuple[str, str], list[FirewallRule]] = {}
    for rule in loaded.records[RULES].values():
        by_target.setdefault((rule.target_kind, rule.target), []).append(rule)
    for (kind, target), rules in sorted(by_target.items()):
        rules.sort(key=lambda x: (x.position, x.id))
        if [x.position for x in rules] == list(range(len(rules))):
            continue
        for position, rule in enumerate(rules):
            if rule.position != position:
                fixed = rule.model_copy(update={"position": position})
                loaded.records[RULES][rule.id] = loaded.repaired[(RULES, rule.id)] = fixed
        log.warning("store records: the firewall rules of %s %r renumbered 0-%d (their "
                    "positions had gaps or repeats)", kind, target, len(rules) - 1)


def _write_back(store: Store, loaded: _Loaded) -> None:
    """In the caller's transaction: quarantine and repairs."""
    for (kind, key), (doc, reason) in sorted(loaded.aside.items()):
        log.warning("store record %s %r set aside as %s %r: %s", kind, key, QUARANTINE,
                    f"{kind}/{key}", reason)
        store.put(QUARANTINE, f"{kind}/{key}",
                  {"kind": kind, "key": key, "reason": reason, "document": doc})
        store.delete(kind, key)
    for (kind, key), record in sorted(loaded.repaired.items()):
        store.put(kind, key, record.model_dump(mode="json"))


def _keep_dpid_counter(store: Store, loaded: _Loaded) -> None:
    """Never hand out a dpid again, even if the counter record was lost."""
    max_dpid = max((h.dpid for h in loaded.records[HOSTS].values()), default=0)
    counter = store.get(META, DPID_COUNTER)
    value = counter.get("value", 1) if counter is not None else None
    if not isinstance(value, int) or value <= max_dpid:
        store.put(META, DPID_COUNTER, {"value": max_dpid + 1})


def _fill(index: DesiredIndex, loaded: _Loaded) -> None:
    r = loaded.records
    for host in r[HOSTS].values():
        index.put_host(host)
    for network in r[NETWORKS].values():
        index.put_network(network)
    for endpoint in r[ENDPOINTS].values():
        index.put_endpoint(endpoint)
    for group in r[GROUPS].values():
        index.put_group(group)
    for pair in r[PAIRS].values():
        index.put_pair_policy(pair)
    for rule in r[RULES].values():
        index.put_rule(rule)
    for port in r[PUBLISHED].values():
        index.put_published_port(port)
