"""Masters spread over the replicas (docs/architecture.md, "Replicas").

Every replica holds a *membership*: the store key `member/NAME` on its own lease,
kept alive like the leadership (controller/cluster/leases.py, same class, same watchdog).
The leader *assigns* the switches to the members (controller/cluster/assignment.py) and
writes the assignment as one store document, with a generation from the store's
revision read inside its exclusive section, so every later assignment has a higher
one.
Every replica reads the assignment through the store watch and is OpenFlow master,
with that generation, of the switches assigned to it while its membership lasts,
and slave of the others.

A member whose process dies is seen at once: the leader holds the liveness stream
of every member (`/api/v1/replicas/member-alive`, served while the membership
lasts) and ends the membership of one that broke without a close frame;
its switches are assigned again at the next round.  A member cut off from the
store loses its membership (its watchdog stops it `margin` before the lease could
expire), and so only then can the leader hand its switches to another member.
A dead leader's membership is ended by the follower that ends its leadership.

A member that comes back (a new membership) is *fresh* for `hold_down` seconds, as
the leader saw it: it takes no switch from a member that masters it
(assignment.py, "fresh").  The members there when a replica begins to lead are
settled: a new leader does not make the others wait again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from controller.cluster.assignment import assign
from controller.cluster.leases import MEMBER_ALIVE_PATH, Lease, stream_died
from controller.cluster.roles import Roles
from controller.store.base import Store, StoreError
from controller.trust.tls import ClientContext

log = logging.getLogger(__name__)

ASSIGNMENT = "assignment"  # store kind; one document, ASSIGNMENT_KEY
ASSIGNMENT_KEY = "switches"
REACH = "reach"  # store kind; key: replica name; {"replica", "switches": [dpid...],
#   "process": the id of the replica's process that wrote it}

Assignment = dict[int, str]  # dpid -> replica name


def parse_assignment(doc: dict[str, Any] | None) -> tuple[Assignment, int]:
    """(dpid -> replica, generation) of an assignment document ({} and 0 for none)."""
    if not doc:
        return {}, 0
    masters = doc.get("masters") or {}
    return {int(d): str(n) for d, n in masters.items()}, int(doc.get("generation", 0))


def assignment_document(masters: Assignment, generation: int) -> dict[str, Any]:
    return {"generation": generation, "masters": {str(d): n for d, n in sorted(masters.items())}}


class Masters:
    def __init__(
        self,
        store: Store,
        record: dict[str, Any],
        leadership: Lease,
        *,
        switches: Callable[[], set[int]],
        ttl: float = 2.0,
        token: str | None = None,
        process: str | None = None,
        tls: ClientContext | None = None,
        hold_down: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`leadership`: the lease of the leader key (the leader assigns);
        `switches`: the dpids of the registered hosts.  Our roles (`roles`) follow
        every newer assignment and our membership; the switches connected to us,
        as the roles count them, are reported to the store (kind REACH) for the
        leader's assignment.  `process`: this process's id (default: a new random
        one); `tls`: our replica certificate for the members' liveness streams;
        `hold_down`: seconds a member that came back waits for its share."""
        # replica -> (the process that reported, None if not said; the switches)
        self._reach: dict[str, tuple[str | None, set[int]]] = {}
        self._reported: set[int] | None = None
        self.store = store
        self.name = str(record["name"])
        # Our process, in our membership's record and in our reports: a report left by
        # an earlier process of this replica is not ours (`reach`).  Unlike the
        # membership's generation it stays when a membership is lost and taken again.
        self.process = process or uuid.uuid4().hex
        record = {**record, "process": self.process}
        self.leadership = leadership
        self.switches = switches
        self.token = token
        self.tls = tls  # our replica certificate for the members' liveness streams
        self.roles = Roles(self.name, lease_valid=lambda: self.is_member,
                           member_api=self.member_api)
        self.membership = Lease(
            store, record, ttl=ttl, key=f"member/{self.name}",
            on_elected=lambda generation: self.roles.set_membership(True),
            on_deposed=lambda: self.roles.set_membership(False),
        )
        self.poll_every = min(0.2, ttl / 10)
        self._lock = threading.Lock()
        self._step_lock = threading.Lock()
        self._members: dict[str, tuple[dict[str, Any], int]] = {}
        self._generation = 0  # of the newest assignment applied
        self._watched: set[str] = set()  # members whose liveness the leader holds
        self._stop = threading.Event()
        self.assignments = 0  # assignments this replica wrote (for /metrics)
        self.hold_down = hold_down
        self.clock = clock
        # While we lead: (member, membership generation) -> when we first saw it
        # (monotonic; -inf for the members there when we began to lead)
        self._seen: dict[tuple[str, int], float] = {}
        self._leading = False

    # --- state ---------------------------------------------------------------------
    @property
    def is_member(self) -> bool:
        return self.membership.held

    def member_apis(self) -> list[str]:
        """The API URLs of the other live members."""
        with self._lock:
            members = dict(self._members)
        return sorted(str(v["api"]) for n, (v, _) in members.items()
                      if n != self.name and v.get("api"))

    def member_api(self, name: str) -> str | None:
        with self._lock:
            record = self._members.get(name, ({}, 0))[0]
        api = record.get("api")
        return str(api) if api else None

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.apply(self.store.get(ASSIGNMENT, ASSIGNMENT_KEY))
        for doc in self.store.list(REACH):
            self.apply_reach(doc)
        self.membership.start()
        threading.Thread(target=self._run, name="daolinet-assigner", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.membership.stop()

    def apply(self, doc: dict[str, Any] | None) -> None:
        """An assignment document (from the store watch, or read at start)."""
        masters, generation = parse_assignment(doc)
        with self._lock:
            if generation <= self._generation:
                return  # ours came back, or an older one arrived late
            self._generation = generation
        self.roles.set_assignment(masters, generation)

    def apply_reach(self, doc: dict[str, Any] | None) -> None:
        """A replica's report of the switches connected to it (store watch, or read at
        start).  A deleted report changes nothing: its replica is gone anyway."""
        if doc and doc.get("replica"):
            process = doc.get("process")
            with self._lock:
                self._reach[str(doc["replica"])] = (
                    str(process) if process is not None else None,
                    {int(d) for d in doc.get("switches", [])},
                )

    def report(self) -> None:
        """Write the switches connected to us when they changed, or first in this
        process (StoreError: again at the next round)."""
        now = self.roles.connected_now()
        if now == self._reported:
            return
        self.store.put(REACH, self.name, {"replica": self.name, "process": self.process,
                                          "switches": sorted(now)})
        self._reported = now

    def reach(self, members: Mapping[str, tuple[dict[str, Any], int]]) -> dict[str, set[int]]:
        """What each member reaches: as its current process reported, ours as we see
        it now.  A report of an earlier process is no longer true: a replica that
        died and came back is a member again before its switches reconnect to it, and
        trusting its previous process's report gave it switches it could not take yet
        (they moved back and forth until it reported again).  A report or a
        membership without a process id (an older replica's) is taken as it is."""
        with self._lock:
            reports = {m: self._reach.get(m) for m in members}
        out = {
            m: set(r[1]) if r is not None and _same_process(r[0], members[m][0]) else set()
            for m, r in reports.items()
        }
        out[self.name] = self.roles.connected_now()
        return out

    # --- the leader assigns --------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll_every):
            try:
                self.report()
                self.step()
            except StoreError as exc:
                log.debug("assignment round: %s", exc)
            except Exception:  # never let the assigner die
                log.exception("assignment round failed")

    def step(self) -> None:
        # One round at a time: the assigner thread and a liveness watcher that saw a
        # member die would otherwise both write the same assignment, the second one
        # only bumping the generation (another round of role requests everywhere).
        with self._step_lock:
            self._step()

    def _step(self) -> None:
        members = self.store.members()
        with self._lock:
            self._members = members
        if not self.leadership.held:
            self._leading = False
            return
        fresh = self.fresh(members)
        for name in set(members) - self._watched - {self.name}:
            self._watch(name, members[name][1])
        current, _ = parse_assignment(self.store.get(ASSIGNMENT, ASSIGNMENT_KEY))
        reach = self.reach(members)
        wanted = assign(self.switches(), members, current, reach, fresh)
        if wanted == current:
            return
        with self.store.exclusive():
            if not self.leadership.held:
                return
            # read again inside the exclusive section: a round of another leader
            # (one that just lost its leadership) may have written it meanwhile
            current, _ = parse_assignment(self.store.get(ASSIGNMENT, ASSIGNMENT_KEY))
            wanted = assign(self.switches(), members, current, reach, fresh)
            if wanted == current:
                return
            # > every earlier assignment's: each was written at or before this revision
            generation = self.store.revision() + 1
            self.store.put(ASSIGNMENT, ASSIGNMENT_KEY, assignment_document(wanted, generation))
        self.assignments += 1
        log.info("assigned %d switch(es) to %d replica(s) (generation %d)", len(wanted),
                 len(members), generation)

    def fresh(self, members: Mapping[str, tuple[dict[str, Any], int]]) -> set[str]:
        """The members whose membership began less than `hold_down` ago (as we, the
        leader, saw it); none of those there when we began to lead."""
        now = self.clock()
        keys = {(name, generation) for name, (_, generation) in members.items()}
        if not self._leading:
            self._leading = True
            self._seen = dict.fromkeys(keys, float("-inf"))
        self._seen = {k: self._seen.get(k, now) for k in keys}
        return {name for (name, _), since in self._seen.items()
                if name != self.name and now - since < self.hold_down}

    def _watch(self, name: str, generation: int) -> None:
        self._watched.add(name)
        threading.Thread(
            target=self._hold_liveness, args=(name, generation),
            name=f"daolinet-liveness-{name}", daemon=True,
        ).start()

    def _hold_liveness(self, name: str, generation: int) -> None:
        """While we lead: hold `name`'s liveness stream; end its membership if its
        process died."""
        try:
            while not self._stop.wait(self.poll_every) and self.leadership.held:
                with self._lock:
                    member = self._members.get(name)
                if member is None or member[1] != generation:
                    return  # gone, or a new membership (its own watcher)
                api = member[0].get("api")
                if not api or not self.token:
                    return
                if stream_died(str(api), self.token, self._stop,
                               lambda: self.leadership.held, MEMBER_ALIVE_PATH,
                               tls=self.tls):
                    try:
                        ended = self.store.end_leadership(generation, f"member/{name}")
                    except StoreError as exc:
                        log.warning("could not end the membership of %s: %s", name, exc)
                        continue
                    if ended:
                        log.warning("replica %s died: its membership ended", name)
                        self.step()
                    return
        finally:
            self._watched.discard(name)


def _same_process(reporter: str | None, member: dict[str, Any]) -> bool:
    process = member.get("process")
    return reporter is None or process is None or reporter == str(process)


def end_membership(store: Store, name: str) -> None:
    """End `name`'s membership now (its process died: the follower that ended its
    leadership calls this, controller/cluster/leases.py)."""
    try:
        current = store.leader(f"member/{name}")
        if current is not None and store.end_leadership(current[1], f"member/{name}"):
            log.warning("replica %s died: its membership ended", name)
    except StoreError as exc:
        log.warning("could not end the membership of %s: %s", name, exc)
