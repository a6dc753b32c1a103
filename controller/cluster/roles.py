"""This replica's OpenFlow role of each switch: master or slave, and with which
generation (docs/architecture.md, "Replicas").

Two models, one class:

* **the only controller** (SQLite, `me` None): master of every switch while its
  lease lasts (`set_master` with the lease's generation, None when it ends);
* **masters spread over replicas** (etcd, `me` our replica name): master of the
  switches the leader assigned to us (`set_assignment`) while our membership lasts
  (`set_membership`), slave of the others (controller/cluster/masters.py).

The runtime (controller/datapath/runtime.py) and the OpenFlow app
(controller/openflow/app.py) receive it in their constructors and listen to its
changes; neither decides a role.  It also counts what the switches answered: the
switches whose role reply says we are master, those connected, the refusals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

RoleListener = Callable[[], None]


class Roles:
    def __init__(
        self,
        me: str | None = None,
        *,
        lease_valid: Callable[[], bool] | None = None,
        member_api: Callable[[str], str | None] | None = None,
    ) -> None:
        """`me`: our replica name with masters spread over replicas, None for the only
        controller.  `lease_valid`: checked before every write to a switch (default:
        while we lead); a lease past its time stops the writes at once, not at the
        next election round.  `member_api`: the API URL of a member by name."""
        self.me = me
        self._lock = threading.Lock()
        self._listeners: list[RoleListener] = []
        self._lease_valid = lease_valid or (lambda: self.master is not None)
        self._member_api = member_api or (lambda name: None)
        # The only controller: our generation while we lead (None until then), and
        # the last one we had (the generation of slave role requests after it).
        self.master: int | None = None
        self._last_generation = 0
        # Spread masters: the assignment (dpid -> replica), its generation, and
        # whether our membership lasts.
        self.assignment: dict[int, str] = {}
        self.assignment_generation = 0
        self.member = False
        # What the switches answered.
        self.refusals: dict[str, int] = {"role": 0, "slave": 0}
        self.mastered: set[int] = set()  # switches whose role reply said we are master
        self.connected: set[int] = set()  # switches with an OpenFlow connection to us

    @property
    def spread(self) -> bool:
        """Whether masters are spread over replicas (else: one master of all)."""
        return self.me is not None

    # --- changes ---------------------------------------------------------------------
    def listen(self, listener: RoleListener) -> None:
        """Call `listener` after every role change, and now if we already lead."""
        with self._lock:
            self._listeners.append(listener)
            leading = self.master is not None
        if leading:
            listener()

    def set_master(self, generation: int | None) -> None:
        """The only controller was elected (its generation) or deposed (None)."""
        with self._lock:
            self.master = generation
            if generation is None:
                self.mastered.clear()
            else:
                self._last_generation = generation
        self._changed()

    def set_assignment(self, masters: dict[int, str], generation: int) -> None:
        """A newer assignment of switches to replicas (spread masters)."""
        with self._lock:
            if generation <= self.assignment_generation:
                return
            self.assignment = dict(masters)
            self.assignment_generation = generation
        self._changed()

    def set_membership(self, member: bool) -> None:
        """Our membership started or ended (spread masters): without it we master
        nothing."""
        with self._lock:
            if member == self.member:
                return
            self.member = member
        self._changed()

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    # --- decisions -------------------------------------------------------------------
    def is_master(self, dpid: int) -> bool:
        """Whether this replica is (to be) OpenFlow master of switch `dpid`."""
        if self.me is None:
            return self.master is not None
        return self.member and self.assignment.get(dpid) == self.me

    def role_generation(self) -> int:
        """The generation id of our role requests."""
        if self.me is None:
            return self.master if self.master is not None else self._last_generation
        return self.assignment_generation

    def lease_valid(self) -> bool:
        """Whether the lease behind our roles still holds (checked before writes)."""
        return self._lease_valid()

    def owner(self, dpid: int) -> str | None:
        """The replica assigned switch `dpid` (spread masters), else None."""
        return self.assignment.get(dpid)

    def owner_api(self, dpid: int) -> str | None:
        """The API URL of the replica that masters switch `dpid` (spread masters)."""
        name = self.assignment.get(dpid)
        return self._member_api(name) if name is not None else None

    # --- what the switches answered --------------------------------------------------
    def confirm_master(self, dpid: int, master: bool) -> None:
        """A switch's role reply (or its disconnection): are we its master?"""
        with self._lock:
            if master and self.is_master(dpid):
                self.mastered.add(dpid)
            else:
                self.mastered.discard(dpid)

    def switch_seen(self, dpid: int, up: bool) -> None:
        """A switch connected to this replica (whatever its role) or went away."""
        with self._lock:
            if up:
                self.connected.add(dpid)
            else:
                self.connected.discard(dpid)

    def connected_now(self) -> set[int]:
        """The switches with an OpenFlow connection to this replica now."""
        with self._lock:
            return set(self.connected)

    def count_refusal(self, kind: str) -> None:
        """A switch refused a role request ("role") or a write as from a slave."""
        with self._lock:
            self.refusals[kind] = self.refusals.get(kind, 0) + 1
