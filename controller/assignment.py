"""Which replica masters which switch, when masters are spread over replicas.

Pure: the leader computes it from the switches it knows of and the replicas that
are members now (docs/architecture.md, "Spread masters").  Two properties matter:

* **balanced**: loads differ by at most one switch, so a setup rate that one
  replica cannot carry is shared;
* **stable**: a switch stays with its master unless that master is gone or holds
  more than its share.  Every move is a takeover (a role request, a flow dump, the
  agent's stream moving), cheap but not free, so a replica joining takes only its
  share, from the most loaded, and nothing moves when nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def assign(
    switches: Iterable[int], members: Iterable[str], current: Mapping[int, str]
) -> dict[int, str]:
    """dpid -> member for every switch (empty without members)."""
    dpids = sorted(set(switches))
    names = sorted(set(members))
    if not names:
        return {}
    share = -(-len(dpids) // len(names))  # the most any member holds
    held: dict[str, list[int]] = {n: [] for n in names}
    orphans: list[int] = []
    for dpid in dpids:
        owner = current.get(dpid)
        if owner in held and len(held[owner]) < share:
            held[owner].append(dpid)
        else:
            orphans.append(dpid)
    for dpid in orphans:
        least = min(names, key=lambda n: (len(held[n]), n))
        held[least].append(dpid)
    while True:  # a member that joined takes its share from the most loaded
        most = max(names, key=lambda n: (len(held[n]), n))
        least = min(names, key=lambda n: (len(held[n]), n))
        if len(held[most]) - len(held[least]) <= 1:
            break
        held[least].append(held[most].pop())
    return {dpid: n for n, ds in held.items() for dpid in ds}


def moved(before: Mapping[int, str], after: Mapping[int, str]) -> set[int]:
    """The switches whose master changes."""
    return {d for d, n in after.items() if before.get(d) != n}
