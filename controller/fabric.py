"""The runtime around the pure core: one lock, the clock, and where effects go.

os-ken threads (OpenFlow events), the asyncio loop (agent streams, API) and the
ticker all call `Fabric.handle(...)`: the core runs under the lock, then its
effects are carried out outside it (OpenFlow messages to the switches, route
deltas to the agent hub).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from controller.core import Core
from controller.corestate import CoreState, Counters, Effects, KernelRouteDelta
from controller.desired import DesiredIndex
from controller.events import (
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
from controller.models import NatRule
from controller.ofmsg import OFMessage

log = logging.getLogger(__name__)


class AgentLink(Protocol):
    """Where route deltas go: the hub of agent streams (controller/hub.py)."""

    def send_delta(self, delta: KernelRouteDelta) -> None: ...

    def host_synced(self, host: str) -> None: ...

    def send_nat(self, host: str, rules: list[NatRule]) -> None: ...

    def send_mesh(self, hosts: list[dict[str, Any]]) -> None: ...

    def drop_all(self) -> None: ...


class Fabric:
    def __init__(self, index: DesiredIndex, state: CoreState | None = None) -> None:
        self.lock = threading.RLock()
        self.core = Core(state or CoreState(), index)
        self.core.state.serial = time.time_ns() >> 12  # fresh cookies after a restart
        # Sends one switch's messages, in order, in one write.
        self.send_openflow: Callable[[int, list[OFMessage]], None] = _nowhere
        self.agents: AgentLink | None = None
        # Replicas (docs/architecture.md, "Replicas"): our generation while this
        # replica leads (None: follower), who hears of a change (the OpenFlow app),
        # and the generation a follower's slave role requests carry.
        self.master: int | None = None
        self._role_listeners: list[Callable[[int | None], None]] = []
        self.generation_hint: Callable[[], int] = lambda: self.master or 0
        # Checked before every write to a switch: the leadership is still within its
        # lease (a replica that was paused or cut off stops at once, not at the next
        # election round).
        self.lease_valid: Callable[[], bool] = lambda: self.master is not None
        self.refusals: dict[str, int] = {"role": 0, "slave": 0}
        self.mastered: set[int] = set()  # switches whose role reply said we are master
        self.connected: set[int] = set()  # switches with an OpenFlow connection to us

    # replicas --------------------------------------------------------------------
    def set_master(self, generation: int | None) -> None:
        """This replica was elected (its generation) or deposed (None)."""
        with self.lock:
            self.master = generation
            if generation is None:
                self.mastered.clear()
            listeners = list(self._role_listeners)
        for listener in listeners:
            listener(generation)
        if generation is None and self.agents is not None:
            self.agents.drop_all()  # the agents go to the new leader

    def listen_role(self, listener: Callable[[int | None], None]) -> None:
        """Call `listener` on every role change, and now with the current role."""
        with self.lock:
            self._role_listeners.append(listener)
            current = self.master
        if current is not None:
            listener(current)

    def confirm_master(self, dpid: int, master: bool) -> None:
        """A switch's role reply (or its disconnection): are we its master?"""
        with self.lock:
            if master and self.master is not None:
                self.mastered.add(dpid)
            else:
                self.mastered.discard(dpid)

    def switch_seen(self, dpid: int, up: bool) -> None:
        """A switch connected to this replica (whatever its role) or went away."""
        with self.lock:
            if up:
                self.connected.add(dpid)
            else:
                self.connected.discard(dpid)

    def count_refusal(self, kind: str) -> None:
        """A switch refused a role request ("role") or a write as from a slave."""
        with self.lock:
            self.refusals[kind] = self.refusals.get(kind, 0) + 1

    def handle(self, handler: Callable[..., Effects], *args: Any) -> None:
        """Run one core handler (its last argument, `now`, is supplied here)."""
        with self.lock:
            fx = handler(*args, time.monotonic())
        self.execute(fx)

    def execute(self, fx: Effects) -> None:
        batches: dict[int, list[OFMessage]] = {}
        for dpid, msg in fx.messages:
            batches.setdefault(dpid, []).append(msg)
        for dpid, msgs in batches.items():
            try:
                self.send_openflow(dpid, msgs)
            except Exception:  # a switch that just went away must not stop the rest
                log.exception("could not send %d messages to %016x", len(msgs), dpid)
        for delta in fx.deltas:
            if self.agents is not None:
                self.agents.send_delta(delta)
            elif delta.token is not None:
                self.handle(self.core.routes_failed, delta.host, delta.token)
        for host in fx.synced_hosts:
            if self.agents is not None:
                self.agents.host_synced(host)
        for host, rules in fx.nat.items():
            if self.agents is not None:
                self.agents.send_nat(host, rules)
        for export in fx.exports:
            # Only a core that was told of hosts served by other replicas exports
            # (Core.set_foreign), and nothing tells it yet: say so loudly.  What
            # waits for it fails at the setup timeout.
            log.error("no transport to the replica serving %s: export %d dropped",
                      export.host, export.token)

    def on_change(self, change: Change) -> None:
        """Inventory callback: desired state changed."""
        if isinstance(change, EndpointAdded):
            self.handle(self.core.endpoint_added, change.endpoint)
        elif isinstance(change, EndpointRemoved):
            self.handle(self.core.endpoint_removed, change.endpoint)
        elif isinstance(change, HostRegistered):
            # a host joined, moved or rotated its key: every agent updates its peers
            if self.agents is not None:
                self.agents.send_mesh(self.mesh_hosts())
        elif isinstance(change, PolicyEvents):
            # Revocation: every live pair is decided again (docs/architecture.md,
            # "Policy enforcement"); NAT sets follow published ports and networks.
            self.handle(self.core.policy_changed)

    # views for the API -----------------------------------------------------------
    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return self.core.live_routes(time.monotonic(), host)

    def counters(self) -> tuple[Counters, int, list[float]]:
        """A copy of the core's counters, the live connection count, setup latencies."""
        with self.lock:
            c = self.core.state.total_view()
            live = len(self.core.live_routes(time.monotonic()))
            return replace(c, setup_latency=[]), live, list(c.setup_latency)

    def host_counters(self) -> dict[str, tuple[Counters, int]]:
        """Per host: its counters (with setup latencies) and its live connections."""
        with self.lock:
            now = time.monotonic()
            hosts = {h.name for h in self.core.index.hosts()}
            hosts |= set(self.core.state.host_counters)
            return {
                h: (self.core.state.host_view(h), len(self.core.live_routes(now, h)))
                for h in sorted(hosts)
                if h
            }

    def mesh_hosts(self) -> list[dict[str, Any]]:
        """The WireGuard facts of every host (the agents' `mesh` message)."""
        keys = ("name", "site", "wg_public_key", "wg_endpoint", "tunnel_address", "relay")
        return [
            {k: v for k, v in h.model_dump(mode="json").items() if k in keys}
            for h in self.core.index.hosts()
        ]

    def nat_snapshot(self, host: str) -> list[dict[str, Any]]:
        """The NAT rules `host` must hold (sent after its route snapshot)."""
        with self.lock:
            rules = self.core.nat_rules(host)
        return [r.model_dump(mode="json", exclude_none=True) for r in rules]

    def snapshot(self, host: str) -> tuple[int, list[dict[str, Any]]] | None:
        """The full route set for a connecting agent, or None until its switch synced."""
        with self.lock:
            if not self.core.is_synced(host):
                return None
            token, routes = self.core.snapshot(host)
        return token, [r.model_dump(mode="json", exclude_none=True) for r in routes]


PolicyEvents = (
    PairPolicyChanged,
    GroupChanged,
    RulesChanged,
    NetworkChanged,
    NetworkAdded,
    NetworkRemoved,
    PublishedPortAdded,
    PublishedPortRemoved,
)


def _nowhere(dpid: int, msgs: list[OFMessage]) -> None:
    log.warning("no OpenFlow app yet; dropped %d messages for %016x", len(msgs), dpid)
