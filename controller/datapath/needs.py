"""Route needs that one replica's switches create on hosts another replica serves.

With masters spread over replicas (docs/architecture.md, "Replicas"), each
replica's core knows only the flows of the switches it masters, and holds the
agent streams of their hosts only.  Most kernel routes a flow needs are on its
own host; two kinds are not:

* **receive needs**: across sites, the receiving host must hold the sender's
  container address in the sending peer's allowed-ips (WireGuard drops the packet
  otherwise), before the first packet arrives and while the sender's flow lives;
* **relay needs**: a relay host carries a NATed pair's packets in its kernel, with
  routes to both ends, and no switch of its own sees them.

A core *exports* such needs to the replica serving the host, and that replica's
core *imports* them into what the host must hold.  An export carries, for every
synced switch the exporting core masters, that switch's whole set of needs on the
host (level-triggered: a set replaces the previous one, an empty set retracts).
Sets are kept per source switch, so a switch's new master replaces its old
master's sets after its flow dump, with no gap, and ordered by (generation,
token): a deposed master's late export, with an older generation, changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IPv4 = ipaddress.IPv4Address
Needs = dict[IPv4, IPv4]  # container address -> next hop (a tunnel address)


@dataclass(frozen=True)
class NeedsExport:
    """Effect: send `needs` (source dpid -> its whole set on `host`) to the replica
    serving `host`, and answer with `Core.exports_acked(host, token, ok)`."""

    host: str
    generation: int
    token: int
    needs: Mapping[int, Needs]
    adds: bool  # whether the host must install something (a setup may wait for it)


@dataclass(frozen=True)
class ImportDone:
    """Effect: an import (`ref`, the shim's handle for it) is applied on its host's
    agent, or could not be (`ok` False: no agent, a failed apply, not ours)."""

    ref: int
    ok: bool


@dataclass
class Export:
    """What a core last exported to one host served elsewhere."""

    sent: dict[int, Needs] | None = None  # None: nothing known there, send everything
    unacked: int | None = None  # token of the last export that added needs, in flight


@dataclass
class Imported:
    generation: int
    token: int
    needs: Needs


@dataclass
class ImportTable:
    """One host's imported sets, per source switch."""

    sets: dict[int, Imported] = field(default_factory=dict)

    def merge(self, generation: int, token: int, needs: Mapping[int, Needs]) -> None:
        for dpid, wanted in needs.items():
            cur = self.sets.get(dpid)
            if cur is None or (generation, token) > (cur.generation, cur.token):
                self.sets[dpid] = Imported(generation, token, dict(wanted))

    def union(self, skip: Iterable[int]) -> Needs:
        """Every imported need except those of the switches in `skip` (ours now, or
        gone): their needs are computed from their flows, or not needed at all."""
        out: Needs = {}
        skipped = set(skip)
        for dpid, imp in sorted(self.sets.items()):
            if dpid not in skipped:
                out.update(imp.needs)
        return out

    def forget(self, dpids: Iterable[int]) -> None:
        for dpid in dpids:
            self.sets.pop(dpid, None)


def adds(old: Mapping[int, Needs] | None, new: Mapping[int, Needs]) -> bool:
    """Whether `new` asks for a route `old` did not have (same address and hop)."""
    have = {(d, v) for n in (old or {}).values() for d, v in n.items()}
    return any((d, v) not in have for n in new.values() for d, v in n.items())
