"""The os-ken app: decode OpenFlow events, call the core, send the role requests
the roles ask for.

Nothing here decides anything: the roles are decided in controller/cluster/roles.py,
connections and routes in the core; controller/openflow/codec.py translates
between the two worlds.  os-ken's AppManager makes the app; its collaborators
arrive as the `daolinet` keyword (`OpenFlowDeps`, see `run_openflow`).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.cluster.roles import Roles
from controller.datapath.events import RemovedFlow
from controller.datapath.runtime import DatapathRuntime
from controller.openflow.admission import REVOKED, Admission, Refused, peer_certificate
from controller.openflow.codec import dumped_flow, parse_ipv4, port_info
from controller.openflow.listener import TLSListener
from controller.openflow.removals import RemovedBatches
from controller.openflow.switches import Switches

log = logging.getLogger(__name__)
ofp = ofproto_v1_3

TICK_SECONDS = 2.0
REVOCATION_SECONDS = 1.0  # how often the open connections' serials are checked


@dataclass(frozen=True)
class OpenFlowDeps:
    """What the app works with, given to its constructor by os-ken's AppManager."""

    runtime: DatapathRuntime
    roles: Roles
    switches: Switches
    admission: Admission


def start_openflow(
    deps: OpenFlowDeps,
    host: str,
    port: int,
    tls: Callable[[], ssl.SSLContext] | None = None,
) -> TLSListener | None:
    """Launch os-ken in-process (os-ken 4 has no osken-manager), on its own thread.

    With `tls` (a server context requiring client certificates) the switches connect
    to our TLSListener (controller/openflow/listener.py), which hands established
    connections to os-ken; os-ken's own listener is then put on a Unix socket in a
    private directory, where no switch can reach it."""
    # Importing os_ken.controller.controller (after app_manager, above: an import
    # cycle) registers the --ofp-* options.
    from os_ken import cfg
    from os_ken.controller import controller as ofp_controller

    listener = None
    if tls is not None:
        listener = TLSListener(
            (host, port), tls, deps.admission, ofp_controller.datapath_connection_factory
        )
        private = tempfile.mkdtemp(prefix="daolinet-openflow-")  # mode 0700
        host, port = f"{private}/os-ken.sock", 1  # a Unix socket (the port is unused)
    cfg.CONF(
        args=["--ofp-listen-host", host, "--ofp-tcp-listen-port", str(port)],
        project="os_ken",
    )
    thread = threading.Thread(target=run_openflow, args=(deps,), name="os-ken", daemon=True)
    thread.start()
    if listener is not None:
        threading.Thread(target=_unlink_when_bound, args=(Path(host),), daemon=True).start()
        listener.start()
    return listener


def _unlink_when_bound(path: Path, timeout: float = 30.0) -> None:
    """Remove os-ken's Unix socket (and its private directory) once it is bound: the
    listening socket works on, nothing can connect to it any more, nothing is left
    behind when the process ends."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        path.unlink()
        path.parent.rmdir()


def run_openflow(deps: OpenFlowDeps) -> None:
    """Load, make and run the app (os-ken's `AppManager.run_apps`, with our
    collaborators as a keyword of every app's constructor); blocks."""
    manager = app_manager.AppManager.get_instance()
    manager.load_apps([__name__])
    contexts = manager.create_contexts()
    services = manager.instantiate_apps(daolinet=deps, **contexts)
    try:
        hub.joinall(services)
    finally:
        manager.close()
        for thread in services:
            thread.kill()
        hub.joinall(services)


class DaolinetApp(app_manager.OSKenApp):  # type: ignore[misc]
    """OpenFlow master of the switches this replica masters, slave of the others.

    One master of every switch while this replica leads (or is the only
    controller); with masters spread over replicas, of the switches assigned to it
    (docs/architecture.md, "Replicas").  Only a switch's master sees its events and
    sends it messages; a slave keeps its connection so that it can take over with
    one role request.
    """

    OFP_VERSIONS: ClassVar[list[int]] = [ofp.OFP_VERSION]

    def __init__(self, *args: Any, daolinet: OpenFlowDeps, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = daolinet.runtime
        self.roles = daolinet.roles
        self.switches = daolinet.switches
        self.admission = daolinet.admission
        self._parts: dict[tuple[int, int], list[Any]] = {}
        self._ports: dict[int, list[Any]] = {}
        self._role_lock = threading.Lock()
        self._roles: dict[int, tuple[bool, int]] = {}  # dpid -> (master?, generation) sent
        self._removed = RemovedBatches(self._flows_removed)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="daolinet-tick", daemon=True)
        self._ticker.start()
        if self.admission.tls:
            threading.Thread(
                target=self._close_revoked, name="daolinet-revoked", daemon=True
            ).start()
        self.roles.listen(self._role_changed)

    def close(self) -> None:
        self._stop.set()

    def get_handlers(self, ev: Any, state: Any = None) -> Any:
        """os-ken's event loop asks this before it runs an event's handlers: any
        event but a FlowRemoved first delivers the notices held before it
        (controller/openflow/removals.py), so that the core sees events in order."""
        if not isinstance(ev, ofp_event.EventOFPFlowRemoved):
            self._removed.flush()
        return super().get_handlers(ev, state)

    # roles (docs/architecture.md, "Replicas") -----------------------------------------
    def _masters(self, dpid: int) -> bool:
        return self.roles.is_master(dpid)

    def _serving(self, dp: Any) -> bool:
        """Whether messages from connection `dp` are heard: it serves its datapath
        (not a refused connection, nor an older one) and we are its master."""
        return self.switches.serves(dp) and self._masters(dp.id)

    def _role_changed(self) -> None:
        """Roles changed (elected, deposed, a new assignment): ask every switch for
        the role we now want of it, and start or stop serving it."""
        changes: list[tuple[int, bool, bool]] = []
        with self._role_lock:
            for dp in self.switches.all():
                was = self._roles.get(dp.id, (False, -1))
                now = self._request_role(dp)
                if now != was:
                    changes.append((dp.id, was[0], now[0]))
        gained = [d for d, was, now in changes if now and not was]
        lost = [d for d, was, now in changes if was and not now]
        if gained:
            log.info("master of %d more switch(es), generation %d", len(gained),
                     self.roles.role_generation())
        if lost:
            log.warning("no longer master of %d switch(es)", len(lost))
        for dpid in gained:
            self.runtime.handle(self.runtime.core.switch_connected, dpid)
        for dpid in lost:
            self.runtime.handle(self.runtime.core.switch_disconnected, dpid)

    def _request_role(self, dp: Any) -> tuple[bool, int]:
        """Send the role we want of `dp` if it changed (caller holds _role_lock)."""
        want = (self._masters(dp.id), self.roles.role_generation())
        if self._roles.get(dp.id) != want:
            self._roles[dp.id] = want
            role = ofp.OFPCR_ROLE_MASTER if want[0] else ofp.OFPCR_ROLE_SLAVE
            dp.send_msg(parser.OFPRoleRequest(dp, role, want[1]))
        return want

    @set_ev_cls(  # type: ignore[untyped-decorator]
        ofp_event.EventOFPRoleReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER]
    )
    def on_role_reply(self, ev: Any) -> None:
        """The switch confirmed a role: the switches this replica masters, as they say."""
        msg = ev.msg
        if not self.switches.serves(msg.datapath):
            return
        mastered = (
            msg.role == ofp.OFPCR_ROLE_MASTER
            and msg.generation_id == self.roles.role_generation()
        )
        self.roles.confirm_master(msg.datapath.id, mastered)
        if mastered:
            log.info("switch %016x: master (generation %d)", msg.datapath.id,
                     msg.generation_id)

    @set_ev_cls(  # type: ignore[untyped-decorator]
        ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER]
    )
    def on_error(self, ev: Any) -> None:
        msg = ev.msg
        dpid = msg.datapath.id
        if not self.switches.serves(msg.datapath):
            return
        if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
            self.roles.count_refusal("role")
            log.error("switch %016x refused our role request (code %d: a newer generation "
                      "leads it)", dpid, msg.code)
        elif msg.type == ofp.OFPET_BAD_REQUEST and msg.code == ofp.OFPBRC_IS_SLAVE:
            self.roles.count_refusal("slave")
            log.warning("switch %016x refused a message: this replica is not its master",
                        dpid)
        else:
            log.warning("switch %016x: OpenFlow error type %d code %d", dpid, msg.type,
                        msg.code)

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            if not any(self._masters(dp.id) for dp in self.switches.all()):
                continue
            try:
                self.runtime.handle_timed(self.runtime.core.tick)
            except Exception:
                log.exception("tick failed")

    def _close_revoked(self) -> None:
        """Close the connections whose certificate was revoked since they were
        admitted (docs/security.md, "Revocation")."""
        while not self._stop.wait(REVOCATION_SECONDS):
            for dp, peer in self.switches.peers():
                if dp.state == DEAD_DISPATCHER:
                    continue  # closed already, its end not handled yet
                try:
                    revoked = self.admission.revoked(peer)
                except Exception:
                    log.exception("revocation check failed")
                    break
                if revoked:
                    self.admission.count(REVOKED)
                    log.warning("switch %016x: the certificate of %s is revoked: connection "
                                "from %s closed", dp.id, peer, dp.address[0])
                    dp.close()

    # switch lifecycle ----------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        try:
            # Before anything else: a refused connection never replaces the
            # datapath's connection, its role or its flows.
            peer = self.admission.admit(dp.id, peer_certificate(dp.socket))
        except Refused as refused:
            log.warning("switch connection from %s refused: %s", dp.address[0], refused)
            dp.close()
            return
        with self._role_lock:
            self.switches.add(dp, peer)
            self.roles.switch_seen(dp.id, True)
            self._roles.pop(dp.id, None)  # a new connection: ask again
            # Under the lock: a role change either sees this switch or is seen here.
            master, _ = self._request_role(dp)
        log.info("switch %016x connected from %s (%s)", dp.id, dp.address,
                 "master" if master else "slave")
        if master:
            self.runtime.handle(self.runtime.core.switch_connected, dp.id)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_dead(self, ev: Any) -> None:
        dp = ev.datapath
        dpid: int | None = dp.id
        with self._role_lock:
            if dpid is None or not self.switches.remove(dp):
                return
            was_master = self._roles.pop(dpid, (False, 0))[0]
            earlier, master = self.switches.get(dpid), False
            if earlier is not None:
                # Its earlier connection is still open: it serves again, with the
                # role we want of it (the switch keeps roles per connection).
                master, _ = self._request_role(earlier)
        if earlier is not None:
            log.warning("switch %016x: connection from %s closed, the one from %s serves "
                        "it again", dpid, dp.address[0], earlier.address[0])
            if master:  # flows and ports again, whatever the closed one did
                self.runtime.handle(self.runtime.core.switch_connected, dpid)
            return
        self.roles.switch_seen(dpid, False)
        self.roles.confirm_master(dpid, False)
        log.info("switch %016x disconnected", dpid)
        if was_master:
            self.runtime.handle(self.runtime.core.switch_disconnected, dpid)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_port_desc(self, ev: Any) -> None:
        dpid = ev.msg.datapath.id
        if not self._serving(ev.msg.datapath):
            return
        self._ports.setdefault(dpid, []).extend(port_info(p) for p in ev.msg.body)
        if ev.msg.flags & ofp.OFPMPF_REPLY_MORE:
            return
        ports = self._ports.pop(dpid, [])
        self.runtime.handle(self.runtime.core.ports_described, dpid, ports)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_port_status(self, ev: Any) -> None:
        msg = ev.msg
        if not self._serving(msg.datapath):
            return
        port = port_info(msg.desc)
        if msg.reason == ofp.OFPPR_DELETE:
            self.runtime.handle_timed(self.runtime.core.port_removed, msg.datapath.id, port)
        else:
            self.runtime.handle(self.runtime.core.port_added, msg.datapath.id, port)

    # traffic ---------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_packet_in(self, ev: Any) -> None:
        msg = ev.msg
        if not self._serving(msg.datapath):
            return
        m = msg.match
        ct_state = m.get("ct_state", 0)
        if isinstance(ct_state, tuple):
            ct_state = ct_state[0]
        info = parse_ipv4(m["in_port"], bytes(msg.data), msg.table_id, int(ct_state))
        if info is not None:
            self.runtime.handle_timed(self.runtime.core.packet_in, msg.datapath.id, info)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_flow_removed(self, ev: Any) -> None:
        """Held until no event waits behind it (or another kind comes first): a
        burst of notices is one batch per switch, one route sync of its host."""
        msg = ev.msg
        if not self._serving(msg.datapath):
            return
        notice = RemovedFlow(
            msg.cookie, msg.packet_count, msg.byte_count,
            msg.duration_sec + msg.duration_nsec / 1e9,
        )
        if self._removed.add(msg.datapath.id, notice) or self.events.empty():
            self._removed.flush()

    def _flows_removed(self, dpid: int, notices: list[RemovedFlow]) -> None:
        self.runtime.handle(self.runtime.core.flows_removed, dpid, notices)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def on_flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        if not self._serving(msg.datapath):
            return
        key = (msg.datapath.id, msg.xid)
        self._parts.setdefault(key, []).extend(msg.body)
        if msg.flags & ofp.OFPMPF_REPLY_MORE:
            return
        body = self._parts.pop(key, [])
        flows = [f for f in (dumped_flow(s) for s in body) if f is not None]
        self.runtime.handle_timed(self.runtime.core.flows_dumped, msg.datapath.id, flows)
