"""Loading the desired state at start: the schema version, then every record, with
the store's bad records repaired or set aside instead of stopping the controller.

One bad record must not keep a controller from starting (a crash loop that no API call
can fix).  At load, under the store's exclusive section:

- the store's schema version is written if absent (a new store), and a store of a
  newer version is refused (`StoreSchemaTooNew`: this controller would misread it);
- a record that does not decode (no JSON object, or refused by its model) or that
  names what does not exist (a container on a missing network or host, a firewall
  rule on a missing network or group) is **set aside**: moved to kind `quarantine`,
  key `KIND/KEY`, with the reason, for the operator to inspect (one warning line);
- a group that lists a missing network is **repaired**: the member is dropped and the
  group written back (one warning line), so a new network of that name does not
  silently join it; firewall rule positions with gaps or repeats are renumbered;

all in one store transaction, so a crash during the repair repairs again at the next
start.  (docs/architecture.md, "Store schema and repair at load".)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from controller.desired.errors import StoreSchemaTooNew
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
from controller.desired.replication import (
    DPID_COUNTER,
    ENDPOINTS,
    GROUPS,
    HOSTS,
    META,
    NETWORKS,
    PAIRS,
    PUBLISHED,
    RULES,
)
from controller.store.base import UNREADABLE, Documents, Store

log = logging.getLogger(__name__)

# The layout of the stored documents this controller reads and writes.  Raise it with
# a change that older controllers would misread, and say in docs/architecture.md
# ("Store schema and repair at load") how a store of the older version is migrated.
SCHEMA_VERSION = 1
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
            if schema is None:  # first use of this store
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
