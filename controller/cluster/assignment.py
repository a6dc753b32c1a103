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

With `fresh` (members whose membership began less than a hold-down ago, as the
leader saw it), a member that just came back takes no switch another member holds
and reaches: it keeps what it holds and gets a switch only when no settled member
can master it.  Its share comes once it is settled.  This is VRRP's preemption
delay: a replica that crashes again soon after it started (a crash loop, a host
still coming up) does not pull switches to itself and drop them again, and the
move back, which agents and new connections feel, happens once and after the
failover has settled rather than in the middle of it.  If every member is fresh,
none is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping


def assign(
    switches: Iterable[int],
    members: Iterable[str],
    current: Mapping[int, str],
    reach: Mapping[str, Collection[int]] | None = None,
    fresh: Collection[str] = (),
) -> dict[int, str]:
    """dpid -> member for every switch (empty without members)."""
    dpids = sorted(set(switches))
    names = sorted(set(members))
    if not names:
        return {}
    settled = [n for n in names if n not in fresh] or names

    def can(name: str, dpid: int) -> bool:
        return reach is None or dpid in reach.get(name, ())

    # Every member keeps what it masters and reaches; the moves below take the
    # excess.  (Cutting each member down to a share first, as this did, is not stable
    # when reach is partial: a member may have to hold more than the share, the next
    # round cut it again and handed the cut switches elsewhere, and the assignment
    # changed every round while switches reconnected.)
    held: dict[str, list[int]] = {n: [] for n in names}
    orphans: list[int] = []
    for dpid in dpids:
        owner = current.get(dpid)
        if owner in held and can(owner, dpid):
            held[owner].append(dpid)
        else:
            orphans.append(dpid)
    for dpid in orphans:
        able = ([n for n in settled if can(n, dpid)]
                or [n for n in names if can(n, dpid)])
        if not able:  # nobody reaches it: it stays where it is (or goes anywhere)
            owner = current.get(dpid)
            able = [owner] if owner in held else settled
        least = min(able, key=lambda n: (len(held[n]), n))
        held[least].append(dpid)
    # A member that joined takes its share from the most loaded (of what it reaches).
    # Every move makes the loads more even, so this ends.  Fresh members take no part.
    balancing = {n: held[n] for n in settled}
    while (move := _one_move(balancing, can)) is not None:
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
