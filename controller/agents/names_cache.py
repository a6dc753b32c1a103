"""The names tables of the connected hosts, kept up to date change by change
(docs/architecture.md, "Names across hosts").

`host_names()` decides every (local container, container) pair of a host; doing that
for every connected host on every change costs O(containers x containers) decisions
per change at the controller.  A change moves only a few of those verdicts, so this
cache keeps each host's verdicts and decides again only the pairs a change can move:

* an endpoint's start, stop, move or rename (`EndpointAdded/Removed/Renamed`): the
  pairs it is in, as source (its own row) or destination (one entry of every row) -
  `decide()` reads the two containers' names, networks and address and the policy,
  nothing of other containers;
* a pair policy: the two pairs of its containers;
* a network's or group's rules (`RulesChanged`): the pairs into the networks they
  are read for (rules are read for the destination only);
* a group or a network changing (`GroupChanged`, `Network*`): the pairs with either
  end in one of the networks the event names (a group's reach, and a rule whose
  source is a group, are read for sources in it too);
* anything else (a change kind this does not know): every cached host again.

The cache answers exactly what `host_names()` would (the unit tests compare them after
random change sequences).  One lock: the inventory's announcing thread applies
changes while a connecting agent's snapshot reads its table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.agents.names import (
    MAX_PEERS,
    MAX_SOURCES,
    Peer,
    SourceNames,
    may_resolve,
    names_of,
)
from controller.desired import events as ev
from controller.desired.index import DesiredReads
from controller.desired.models import Endpoint

log = logging.getLogger(__name__)

# Changes that decide() does not read (published ports are the outside's way in; a
# registered host changes no container).
_NO_NAMES_CHANGE = (ev.PublishedPortAdded, ev.PublishedPortRemoved, ev.HostRegistered)


@dataclass
class _Row:
    """What one local container may resolve: the containers it may reach, by id."""

    source: Endpoint
    reach: dict[str, Endpoint] = field(default_factory=dict)
    built: SourceNames | None = None  # the row as sent, until an entry changes

    def decide(self, index: DesiredReads, dst: Endpoint | None, dst_id: str) -> bool:
        """Decide the entry of `dst_id` again (`dst` None: it is gone); whether the
        row changed."""
        if dst is not None and (dst.id == self.source.id or may_resolve(index, self.source, dst)):
            if self.reach.get(dst_id) == dst:
                return False
            self.reach[dst_id] = dst
        elif self.reach.pop(dst_id, None) is None:
            return False
        self.built = None
        return True

    def names(self) -> SourceNames:
        if self.built is None:
            peers = sorted(self.reach.values(), key=lambda e: e.ip)
            if len(peers) > MAX_PEERS:
                log.warning("container %s may reach more than %d containers; names served "
                            "for the first %d", self.source.name, MAX_PEERS, MAX_PEERS)
                peers = peers[:MAX_PEERS]
            self.built = SourceNames(self.source.ip,
                                     tuple(Peer(p.ip, names_of(p)) for p in peers))
        return self.built


def _row(index: DesiredReads, src: Endpoint, everyone: Iterable[Endpoint]) -> _Row:
    row = _Row(src)
    for dst in everyone:
        row.decide(index, dst, dst.id)
    return row


class NamesCache:
    """The names tables of the hosts asked for (`table`), updated by `apply`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, dict[str, _Row]] = {}  # host -> source id -> row

    def table(self, index: DesiredReads, host: str) -> list[SourceNames]:
        """`host`'s table, as `host_names(index, host)` gives it."""
        with self._lock:
            rows = self._hosts.get(host)
            if rows is None:
                rows = self._hosts[host] = self._compute(index, host)
            sources = sorted(rows.values(), key=lambda r: r.source.ip)
            if len(sources) > MAX_SOURCES:
                log.warning("host %s: %d containers; names served for the first %d", host,
                            len(sources), MAX_SOURCES)
                sources = sources[:MAX_SOURCES]
            return [row.names() for row in sources]

    def cached(self, host: str) -> bool:
        with self._lock:
            return host in self._hosts

    def forget(self, host: str) -> None:
        """`host`'s agent is gone: its table is no longer kept up to date."""
        with self._lock:
            self._hosts.pop(host, None)

    def apply(self, index: DesiredReads, change: ev.Change) -> set[str]:
        """Bring the cached tables in line with `index`, which holds `change`; the
        hosts whose table may differ now."""
        with self._lock:
            if isinstance(change, _NO_NAMES_CHANGE):
                return set()
            if isinstance(change, ev.HostRemoved):
                self._hosts.pop(change.host.name, None)
                return set()
            if isinstance(change, (ev.EndpointAdded, ev.EndpointRemoved)):
                return self._endpoint_changed(index, change.endpoint.id)
            if isinstance(change, ev.EndpointRenamed):
                return (self._endpoint_changed(index, change.before.id)
                        | self._endpoint_changed(index, change.after.id))
            if isinstance(change, ev.PairPolicyChanged):
                return self._pair_changed(index, change.a, change.b)
            if isinstance(change, ev.RulesChanged):
                # rules are read for the destination only: the pairs into them
                return self._networks_changed(index, _rule_networks(index, change),
                                              sources=False)
            networks = _networks_of(change)
            if networks is not None:
                return self._networks_changed(index, networks, sources=True)
            for host in self._hosts:  # a change this cache does not know: all again
                self._hosts[host] = self._compute(index, host)
            return set(self._hosts)

    # internals (the lock is held) -----------------------------------------------------
    def _compute(self, index: DesiredReads, host: str) -> dict[str, _Row]:
        everyone = index.endpoints()
        return {src.id: _row(index, src, everyone) for src in index.endpoints(host=host)}

    def _endpoint_changed(self, index: DesiredReads, ep_id: str) -> set[str]:
        now = index.endpoint(ep_id)
        if now is not None and now.id != ep_id:
            now = None  # a name that equals the id of a gone endpoint
        touched: set[str] = set()
        for host, rows in self._hosts.items():
            if ep_id in rows and (now is None or now.host != host):
                del rows[ep_id]
                touched.add(host)
            if now is not None and now.host == host:
                rows[ep_id] = _row(index, now, index.endpoints())
                touched.add(host)
            for row in rows.values():
                if row.source.id != ep_id and row.decide(index, now, ep_id):
                    touched.add(host)
        return touched

    def _pair_changed(self, index: DesiredReads, a: str, b: str) -> set[str]:
        ends = [index.endpoint(a), index.endpoint(b)]
        touched: set[str] = set()
        for src, dst in (ends, ends[::-1]):
            if src is None or dst is None:
                continue
            row = self._hosts.get(src.host, {}).get(src.id)
            if row is not None and row.decide(index, dst, dst.id):
                touched.add(src.host)
        return touched

    def _networks_changed(self, index: DesiredReads, networks: frozenset[str], *,
                          sources: bool) -> set[str]:
        """Decide again the pairs into `networks`, and with `sources` the rows of
        their containers."""
        everyone = index.endpoints()
        inside = [e for e in everyone if e.network in networks]
        touched: set[str] = set()
        for host, rows in self._hosts.items():
            for row in list(rows.values()):
                touched.add(host)
                if sources and row.source.network in networks:
                    rows[row.source.id] = _row(index, row.source, everyone)
                else:
                    for dst in inside:
                        row.decide(index, dst, dst.id)
        return touched


def _rule_networks(index: DesiredReads, change: ev.RulesChanged) -> frozenset[str]:
    """The networks whose containers the changed rules are read for: the target's
    networks when the change was made and now."""
    if change.target_kind == "group":
        group = index.group(change.target)
        now = frozenset(group.networks) if group is not None else frozenset()
    else:
        now = frozenset([change.target])
    return frozenset(change.networks) | now


def _networks_of(change: ev.Change) -> frozenset[str] | None:
    """The networks whose containers' pairs (either end) `change` may move, or None
    (unknown)."""
    if isinstance(change, ev.GroupChanged):
        return change.networks
    if isinstance(change, (ev.NetworkAdded, ev.NetworkRemoved)):
        return frozenset([change.network.name])
    if isinstance(change, ev.NetworkChanged):
        return frozenset([change.before.name, change.after.name])
    return None

