"""The runtime around the pure core: one lock, the clock, and where effects go.

os-ken threads (OpenFlow events), the asyncio loop (agent streams, API) and the
ticker all call `DatapathRuntime.handle(...)`: the core runs under the lock, then its
effects are carried out outside it (OpenFlow messages to the switches, route
deltas to the agent hub).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.datapath.connections import ConnEvent
from controller.datapath.core.facade import Core
from controller.datapath.effects import Effects, KernelRouteDelta
from controller.datapath.messages import OFMessage
from controller.datapath.needs import ImportDone, Needs, NeedsExport
from controller.datapath.state import CoreState, Counters
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
from controller.desired.models import Host, KernelRoute, NatRule

log = logging.getLogger(__name__)

TAKEOVER_SETTLE = 0.3  # seconds (see DatapathRuntime.snapshot_delay)


class AgentLink(Protocol):
    """Where route deltas go: the hub of agent streams (controller/agents/hub.py)."""

    def send_delta(self, delta: KernelRouteDelta) -> None: ...

    def host_synced(self, host: str) -> None: ...

    def send_nat(self, host: str, rules: list[NatRule]) -> None: ...

    def send_mesh(self, hosts: list[Host]) -> None: ...

    def names_changed(self, change: Change) -> None: ...

    def drop_all(self) -> None: ...

    def drop_hosts(self, hosts: set[str]) -> None: ...

    def host_removed(self, host: str) -> None: ...


class SwitchLink(Protocol):
    """Where OpenFlow messages go: the switches' connections
    (controller/openflow/switches.py)."""

    def send(self, dpid: int, msgs: list[OFMessage]) -> None:
        """Send one switch's messages, in order, in one write."""
        ...


class ExportLink(Protocol):
    """Where exports to other replicas go (controller/cluster/exports.py)."""

    def send(self, sender: str, export: NeedsExport) -> None: ...


class ConnectionSink(Protocol):
    """Where the connection log's events go (controller/connlog/log.py, `ConnectionLog`)."""

    def record(self, events: list[ConnEvent]) -> None: ...


class RoleState(Protocol):
    """This replica's roles (controller/cluster/roles.py, `Roles`): the runtime
    follows them and decides none."""

    @property
    def me(self) -> str | None: ...

    @property
    def master(self) -> int | None: ...

    @property
    def member(self) -> bool: ...

    @property
    def assignment_generation(self) -> int: ...

    def is_master(self, dpid: int) -> bool: ...

    def owner(self, dpid: int) -> str | None: ...

    def owner_api(self, dpid: int) -> str | None: ...

    def listen(self, listener: Callable[[], None]) -> None: ...


@dataclass
class ImportWait:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class DatapathRuntime:
    def __init__(
        self,
        index: DesiredIndex,
        roles: RoleState,
        *,
        state: CoreState | None = None,
        switches: SwitchLink | None = None,
        agents: Callable[[DatapathRuntime], AgentLink] | None = None,
        exports: Callable[[DatapathRuntime], ExportLink] | None = None,
        connlog: ConnectionSink | None = None,
    ) -> None:
        """`switches`: where OpenFlow messages go; `agents` and `exports`: factories
        of the agent hub and the exporter to other replicas, which are given this
        runtime (each calls back into it: acks, snapshots, export answers);
        `connlog`: the connection log (None: decisions are not logged)."""
        self.connlog = connlog
        self.lock = threading.RLock()
        self.index = index
        self.core = Core(state or CoreState())
        self.core.state.serial = time.time_ns() >> 12  # fresh cookies after a restart
        self.roles = roles
        self.switches = switches
        self._imports: dict[int, ImportWait] = {}
        self._took_over: dict[str, float] = {}  # host -> when we took its switch over
        self._served: set[str] = set()  # hosts whose switch we master (spread masters)
        self._import_refs = itertools.count(1)
        self.agents = agents(self) if agents is not None else None
        self.exports = exports(self) if exports is not None else None
        roles.listen(self._roles_changed)

    # replicas --------------------------------------------------------------------
    def _roles_changed(self) -> None:
        """Follow a role change: with spread masters, the hosts of other replicas'
        switches become foreign to the core; the agents of hosts no longer ours
        (all, when the only controller was deposed) go to their new masters."""
        if self.roles.me is None:
            if self.roles.master is None and self.agents is not None:
                self.agents.drop_all()  # the agents go to the new leader
            return
        with self.lock:
            me = self.roles.me
            hosts = self.index.hosts()
            member = self.roles.member
            foreign = {h.name for h in hosts
                       if not member or (self.roles.owner(h.dpid) or me) != me}
            gone = {h.name for h in hosts if not self.roles.is_master(h.dpid)}
            now = time.monotonic()
            served = {h.name for h in hosts} - gone
            for name in served - self._served:
                self._took_over[name] = now
            self._served = served
            fx = self.core.set_foreign(
                self.index.view(), foreign, self.roles.assignment_generation
            )
        self.execute(fx)
        if self.agents is not None:
            self.agents.drop_hosts(gone)  # their agents go to their new masters

    def serves(self, host: str) -> bool:
        """Whether this replica holds `host`'s agent stream (it masters its switch)."""
        if self.roles.me is None:
            return self.roles.master is not None
        h = self.index.host(host)
        return h is not None and self.roles.is_master(h.dpid)

    def owner_api(self, host: str) -> str | None:
        """The API URL of the replica that masters `host`'s switch (spread masters)."""
        h = self.index.host(host)
        return self.roles.owner_api(h.dpid) if h is not None else None

    def handle(self, handler: Callable[..., Effects], *args: Any) -> None:
        """Run one core handler on the desired state's latest version (its first
        argument, supplied here: one version for the whole call)."""
        with self.lock:
            fx = handler(self.index.view(), *args)
        self.execute(fx)

    def handle_timed(self, handler: Callable[..., Effects], *args: Any) -> None:
        """Run one core handler that reads the time (its last argument, `now`,
        is supplied here, under the lock)."""
        with self.lock:
            fx = handler(self.index.view(), *args, time.monotonic())
        self.execute(fx)

    def execute(self, fx: Effects) -> None:
        if fx.connections and self.connlog is not None:
            self.connlog.record(fx.connections)  # outside the core's lock
        batches: dict[int, list[OFMessage]] = {}
        for dpid, msg in fx.messages:
            batches.setdefault(dpid, []).append(msg)
        for dpid, msgs in batches.items():
            try:
                if self.switches is None:
                    log.warning("no OpenFlow switches yet; dropped %d messages for %016x",
                                len(msgs), dpid)
                    continue
                self.switches.send(dpid, msgs)
            except Exception:  # a switch that just went away must not stop the rest
                log.exception("could not send %d messages to %016x", len(msgs), dpid)
        for delta in fx.deltas:
            if self.agents is not None:
                self.agents.send_delta(delta)
            elif delta.token is not None:
                self.handle_timed(self.core.routes_failed, delta.host, delta.token)
        for host in fx.synced_hosts:
            if self.agents is not None:
                self.agents.host_synced(host)
        for host, rules in fx.nat.items():
            if self.agents is not None:
                self.agents.send_nat(host, rules)
        for export in fx.exports:
            if self.exports is not None:
                self.exports.send(self.roles.me or "", export)
            else:  # a core only exports once told of other replicas' hosts
                log.error("no transport to the replica serving %s: export %d dropped",
                          export.host, export.token)
        for done in fx.imports_done:
            self._imports_done(done)

    # imports from other replicas (controller/datapath/needs.py) -----------------------
    def import_needs(
        self, host: str, generation: int, token: int, needs: dict[int, Needs]
    ) -> ImportWait:
        """Another replica's export for our `host`; `wait.done` is set once the host's
        agent holds it (`wait.ok`) or it failed."""
        wait = ImportWait()
        with self.lock:
            ref = next(self._import_refs)
            self._imports[ref] = wait
        self.handle(self.core.needs_imported, host, generation, token, needs, ref)
        return wait

    def _imports_done(self, done: ImportDone) -> None:
        with self.lock:
            wait = self._imports.pop(done.ref, None)
        if wait is not None:
            wait.ok = done.ok
            wait.done.set()

    def forget_import(self, wait: ImportWait) -> None:
        """Its exporter gave up waiting (its setup timed out)."""
        with self.lock:
            for ref, w in list(self._imports.items()):
                if w is wait:
                    del self._imports[ref]

    def on_change(self, change: Change) -> None:
        """Inventory callback: desired state changed."""
        if isinstance(change, EndpointAdded):
            self.handle(self.core.endpoint_added, change.endpoint)
        elif isinstance(change, EndpointRemoved):
            self.handle_timed(self.core.endpoint_removed, change.endpoint)
        elif isinstance(change, HostRegistered):
            # a host joined, moved or rotated its key: every agent updates its peers
            if self.agents is not None:
                self.agents.send_mesh(self.mesh_hosts())
        elif isinstance(change, HostRemoved):
            self._host_removed(change.host)
        elif isinstance(change, PolicyEvents):
            # Revocation: every live pair is decided again (docs/architecture.md,
            # "Policy enforcement"); NAT sets follow published ports and networks.
            self.handle_timed(self.core.policy_changed)
        if isinstance(change, (EndpointAdded, EndpointRemoved, EndpointRenamed, HostRemoved,
                               *PolicyEvents)) and self.agents is not None:
            # what a container may resolve follows every endpoint and policy change
            self.agents.names_changed(change)

    def _host_removed(self, host: Host) -> None:
        """A removed host: the core forgets it, its agent's stream is closed, and
        every other agent gets the mesh without it (its WireGuard peer goes).  The
        leader stops assigning its switch at its next round: the assignment is made
        from the registered hosts (controller/cluster/masters.py)."""
        self.handle_timed(self.core.host_removed, host)
        with self.lock:
            self._served.discard(host.name)
            self._took_over.pop(host.name, None)
        if self.agents is not None:
            self.agents.host_removed(host.name)
            self.agents.send_mesh(self.mesh_hosts())

    # views for the API -----------------------------------------------------------
    def routes(self, host: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return self.core.live_routes(self.index.view(), time.monotonic(), host)

    def counters(self) -> tuple[Counters, int]:
        """A copy of the core's counters (setup latencies included), the live
        connection count."""
        with self.lock:
            c = self.core.total_counters()
            live, _ = self.core.live_counts(self.index.view())
            return c, live

    def host_counters(self) -> dict[str, tuple[Counters, int]]:
        """Per host: its counters (with setup latencies) and its live connections."""
        with self.lock:
            hosts = {h.name for h in self.index.hosts()}
            hosts |= set(self.core.state.host_counters)
            _, live = self.core.live_counts(self.index.view())
            return {
                h: (self.core.host_counters(h), live.get(h, 0))
                for h in sorted(hosts)
                if h
            }

    def mesh_hosts(self) -> list[Host]:
        """Every host, for its WireGuard facts (the agents' `mesh` message)."""
        return list(self.index.hosts())

    def nat_snapshot(self, host: str) -> list[NatRule]:
        """The NAT rules `host` must hold (sent after its route snapshot)."""
        with self.lock:
            return list(self.core.nat_rules(self.index.view(), host))

    def snapshot_delay(self, host: str) -> float:
        """Seconds to wait before `host`'s agent gets its snapshot: a host just taken
        over from another replica waits TAKEOVER_SETTLE for the other replicas'
        exports (each sends them again when it sees the new assignment)."""
        with self.lock:
            since = self._took_over.get(host)
        if since is None:
            return 0.0
        return max(0.0, since + TAKEOVER_SETTLE - time.monotonic())

    def snapshot(self, host: str) -> tuple[int, list[KernelRoute]] | None:
        """The full route set for a connecting agent, or None until its switch synced."""
        with self.lock:
            if not self.core.is_synced(host):
                return None
            fx = self.core.snapshot(self.index.view(), host)
        self.execute(fx)
        (snap,) = fx.snapshots
        return snap.token, list(snap.routes)


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

