"""Which replica masters which switch, when masters are spread over replicas.

Pure: the leader computes it from the switches it knows of and the replicas that
are members now (docs/architecture.md, "Replicas").  Two properties matter:

* **balanced**: loads differ by at most one switch, so a setup rate that one
  replica cannot carry is shared;
* **stable**: a switch stays with its master unless that master is gone or holds
  more than its share.  Every move is a takeover (a role request, a flow dump, the
  agent's stream moving), cheap but not free, so a replica joining takes only its
  share, from the most loaded, and nothing moves when nothing changed.

With `reach` (member -> the switches connected to it), a switch goes only to a
member it is connected to, as long as one is: a replica that just (re)started
gets its share once its switches have reconnected to it, not before (a switch
assigned to a replica it cannot reach has no master meanwhile).  A switch no member
reaches stays where it is.  Balance then holds as far as reach allows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping


def assign(
    switches: Iterable[int],
    members: Iterable[str],
    current: Mapping[int, str],
    reach: Mapping[str, Collection[int]] | None = None,
) -> dict[int, str]:
    """dpid -> member for every switch (empty without members)."""
    dpids = sorted(set(switches))
    names = sorted(set(members))
    if not names:
        return {}

    def can(name: str, dpid: int) -> bool:
        return reach is None or dpid in reach.get(name, ())

    share = -(-len(dpids) // len(names))  # the most any member holds
    held: dict[str, list[int]] = {n: [] for n in names}
    orphans: list[int] = []
    for dpid in dpids:
        owner = current.get(dpid)
        if owner in held and len(held[owner]) < share and can(owner, dpid):
            held[owner].append(dpid)
        else:
            orphans.append(dpid)
    for dpid in orphans:
        able = [n for n in names if can(n, dpid)]
        if not able:  # nobody reaches it: it stays where it is (or goes anywhere)
            owner = current.get(dpid)
            able = [owner] if owner in held else names
        least = min(able, key=lambda n: (len(held[n]), n))
        held[least].append(dpid)
    # A member that joined takes its share from the most loaded (of what it reaches).
    # Every move makes the loads more even, so this ends.
    while (move := _one_move(held, can)) is not None:
        dpid, src, dst = move
        held[src].remove(dpid)
        held[dst].append(dpid)
    return {dpid: n for n, ds in held.items() for dpid in ds}


def _one_move(
    held: dict[str, list[int]], can: Callable[[str, int], bool]
) -> tuple[int, str, str] | None:
    """(switch, from, to): one switch from a member holding at least two more than
    another that reaches it; None when there is no such move."""
    for least in sorted(held, key=lambda n: (len(held[n]), n)):
        for most in sorted(held, key=lambda n: (len(held[n]), n), reverse=True):
            if len(held[most]) - len(held[least]) <= 1:
                break
            movable = [d for d in held[most] if can(least, d)]
            if movable:
                return movable[-1], most, least
    return None
