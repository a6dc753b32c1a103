"""Leases in the store: the leadership (key "leader": the leader of the replicas,
or a follower) and, the same class on another key, a replica's membership
(controller/cluster/masters.py).

The replicas of one deployment share a store (etcd) and elect one leader through
it (`Store.try_lead`); the leader assigns the switches to the members, each member
masters its share (docs/architecture.md, "Replicas").  With SQLite there is one
controller, and it always leads and masters every switch.

A leadership (or membership) ends in the store `ttl` seconds after its last
refresh.  Its holder stops acting on it earlier, `margin` seconds before that could
happen (a watchdog thread checks, so a refresh stuck on an unreachable store cannot
keep it master): two replicas never both believe they hold it.  The switches fence
a deposed master too: a newer master's role request (a higher generation) demotes
it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosedError, WebSocketException

from controller.store.base import Leadership, Store, StoreError
from controller.trust.tls import ClientContext
from controller.trust.wsclient import connect as ws_connect

log = logging.getLogger(__name__)

REPLICAS = "replica"  # store kind: one record per controller replica (replica_record)


def replica_record(
    name: str,
    api: str | None,
    openflow: str | None,
    *,
    site: str | None = None,
    openflow_remote: str | None = None,
) -> dict[str, Any]:
    """What a replica records in the store (and as the leader's value): its name, API
    URL, the OpenFlow target the switches of its own site (or of every site, when it
    has none) reach it at, its site, and the target the switches of other sites reach
    it at (default: `openflow`)."""
    return {"name": name, "api": api, "openflow": openflow, "site": site,
            "openflow_remote": openflow_remote or openflow}


def target_for(record: Mapping[str, Any], site: str) -> str | None:
    """The OpenFlow target a switch of `site` connects to this replica at: `openflow`
    when the replica has no site or the same one, else `openflow_remote` (a record
    written before there was one: `openflow`)."""
    local = record.get("openflow") or None
    if not record.get("site") or record.get("site") == site:
        return str(local) if local else None
    remote = record.get("openflow_remote") or local
    return str(remote) if remote else None


def openflow_targets(records: Iterable[Mapping[str, Any]], site: str) -> list[str]:
    """The targets a switch of `site` connects to: every replica's (sorted, no
    duplicates)."""
    return sorted({t for r in records if (t := target_for(r, site)) is not None})


def replica_targets(store: Store, site: str) -> list[str]:
    """Replicated controllers: the OpenFlow targets of every replica for a switch of
    `site` (each switch connects to all of them, `target_for`)."""
    return openflow_targets(store.list(REPLICAS), site)


def standalone_targets(
    site: str | None, remote: str | None
) -> Callable[[str], list[str]] | None:
    """The one controller (SQLite): a switch of another site than its own gets
    --advertise-openflow-remote when it was given; every other switch the target
    derived from the address its agent reached the API at (controller/api/routes/hosts.py)."""
    if site is None or remote is None:
        return None
    return lambda host_site: [] if host_site == site else [remote]


OPENFLOW_SCHEMES = ("ssl", "tcp")  # TLS with the host's certificate; plain (insecure)


def parse_openflow_target(value: str) -> str:
    """`ssl:IP:PORT` or `tcp:IP:PORT` (IPv4, or IPv6 in brackets), as OVS takes it;
    ValueError else."""
    scheme, _, rest = value.partition(":")
    host, sep, port = rest.rpartition(":")
    ok = scheme in OPENFLOW_SCHEMES and sep and port.isdigit() and 0 < int(port) < 65536
    if ok and host.startswith("[") and host.endswith("]"):
        ok = _ip_version(host[1:-1]) == 6
    elif ok:
        ok = _ip_version(host) == 4
    if not ok:
        raise ValueError(
            f"{value!r} is not ssl:IP:PORT or tcp:IP:PORT (an IPv4 address or [IPv6], "
            "port 1-65535)"
        )
    return value


def _ip_version(text: str) -> int | None:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


class Lease:
    """A lease on one store key (the leadership or a membership), kept alive while
    this process takes part; `held` says whether it holds it now."""

    def __init__(
        self,
        store: Store,
        info: dict[str, Any],
        *,
        ttl: float = 2.0,
        on_elected: Callable[[int], None] = lambda generation: None,
        on_deposed: Callable[[], None] = lambda: None,
        token: str | None = None,
        standalone: bool = False,
        key: str = "leader",
        on_leader_died: Callable[[str], None] = lambda name: None,
        tls: ClientContext | None = None,
    ) -> None:
        """`token`: the API token; with it, a follower holds the leader's liveness
        stream and ends the leadership of a leader whose process died.
        `standalone`: the only controller (SQLite): it leads from start to stop with one
        generation, and no refresh or watchdog can depose it (there is nobody to hand
        the switches to: a slow refresh on a loaded host must not cost a resync).
        `key`: the store key held ("leader"; "member/NAME" for a replica's membership,
        controller/cluster/masters.py).  `on_leader_died`: called with the name of a
        leader whose process died, once its leadership ended (with spread masters,
        its membership ends too: controller/cluster/masters.py, `end_membership`).
        `tls`: this replica's certificate for the other replicas' APIs (https)."""
        self.store = store
        self.key = key
        self.what = "leadership" if key == "leader" else "membership"
        self.info = dict(info)
        self.ttl = ttl
        self.margin = min(0.5, ttl / 4)
        self.refresh_every = ttl / 5
        self.poll_every = min(0.2, ttl / 10)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.token = token
        self.tls = tls
        self.standalone = standalone
        self._lock = threading.Lock()
        self._lease: Leadership | None = None
        self._valid_until = 0.0  # monotonic time until which this replica may lead
        self._generation = 0  # ours while leading, else the last leader's we saw
        self._leader: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.elections = 0  # how often this replica became leader (for /metrics)
        self.on_leader_died = on_leader_died

    # --- state -----------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """Whether this process holds the lease now (the leadership, or the membership)."""
        with self._lock:
            if self.standalone:
                return self._lease is not None
            return self._lease is not None and time.monotonic() < self._valid_until

    @property
    def generation(self) -> int:
        """The generation id of role requests: ours while leading, else the leader's."""
        with self._lock:
            return self._generation

    def leader(self) -> dict[str, Any] | None:
        """The leader's record (name, api, openflow) as last seen; ours while leading."""
        with self._lock:
            return dict(self.info) if self._lease is not None else self._leader

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self.standalone:
            while self._lease is None and not self._stop.is_set():
                self._try_lead()
                if self._lease is None:
                    self._stop.wait(self.poll_every)
            return
        targets = [(self._run, "daolinet-election"), (self._watchdog, "daolinet-lease-watchdog")]
        if self.token:
            targets.append((self._watch_leader, "daolinet-leader-liveness"))
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking part; a leader resigns so another replica takes over at once."""
        self._stop.set()
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.resign()
            self.on_deposed()

    # --- the election loop -----------------------------------------------------------
    def step(self) -> None:
        """One round: a follower tries to lead, a leader refreshes (tests call this)."""
        with self._lock:
            lease = self._lease
        if lease is None:
            self._try_lead()
        else:
            self._refresh(lease)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # never let the election die: log and go on
                log.exception("election round failed")
            with self._lock:
                wait = self.refresh_every if self._lease is not None else self.poll_every
            self._stop.wait(wait)

    def _try_lead(self) -> None:
        started = time.monotonic()
        try:
            lease = self.store.try_lead(self.info, self.ttl, key=self.key)
            current = None if lease is not None else self.store.leader(self.key)
        except StoreError as exc:
            log.debug("election: %s", exc)
            return
        if lease is None:
            with self._lock:
                if current is not None:
                    self._leader, self._generation = current
                else:
                    self._leader = None
            return
        with self._lock:
            if self._stop.is_set():
                lease.resign()
                return
            self._lease = lease
            self._generation = lease.generation
            self._valid_until = started + self.ttl - self.margin
            self.elections += 1
        if self.key == "leader":
            log.info("leading the controller replicas (generation %d)", lease.generation)
        else:
            log.info("member of the controller replicas (generation %d)", lease.generation)
        self.on_elected(lease.generation)

    def _refresh(self, lease: Leadership) -> None:
        started = time.monotonic()
        try:
            ok = lease.refresh()
        except Exception as exc:  # an unreachable store: the watchdog decides
            log.warning("could not refresh the %s: %s", self.what, exc)
            return
        if ok:
            with self._lock:
                if self._lease is lease:
                    self._valid_until = started + self.ttl - self.margin
            return
        log.warning("the %s (generation %d) is lost", self.what, lease.generation)
        self._depose(lease)

    def _watchdog(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                lease = self._lease
                expired = lease is not None and time.monotonic() >= self._valid_until
            if lease is not None and expired:
                log.warning(
                    "no %s refresh for %.1fs: stepping down (generation %d)",
                    self.what, self.ttl - self.margin, lease.generation,
                )
                self._depose(lease)

    def _depose(self, lease: Leadership) -> None:
        with self._lock:
            if self._lease is not lease:
                return
            self._lease = None
            self._leader = None
        self.on_deposed()
        lease.resign()

    # --- the leader's liveness (a crash is seen at once, not at lease expiry) ---------
    def _watch_leader(self) -> None:
        while not self._stop.wait(self.poll_every):
            with self._lock:
                leader, generation = self._leader, self._generation
                leading = self._lease is not None
            if leading or not leader or not leader.get("api") or \
                    leader.get("name") == self.info.get("name"):
                continue
            if self._leader_died(str(leader["api"]), generation):
                try:
                    ended = self.store.end_leadership(generation)
                except StoreError as exc:
                    log.warning("could not end the dead leader's leadership: %s", exc)
                    continue
                if ended:
                    log.warning("the leader %s (generation %d) died: its leadership ended",
                                leader.get("name"), generation)
                    self.on_leader_died(str(leader.get("name", "")))
                    self.step()

    def _leader_died(self, api: str, generation: int) -> bool:
        def still_following() -> bool:
            with self._lock:
                return self._generation == generation and self._lease is None

        return stream_died(api, self.token or "", self._stop, still_following, tls=self.tls)


def stream_died(
    api: str,
    token: str,
    stop: threading.Event,
    still_relevant: Callable[[], bool],
    path: str | None = None,
    tls: ClientContext | None = None,
) -> bool:
    """Hold a replica's liveness stream (`path`, default the leader's) while
    `still_relevant()`; True when it broke without a close frame (the process is
    gone: its kernel closed the connection).  A refused or silent connection proves
    nothing (a starting API, a partition): the lease decides.  `tls`: our replica
    certificate, which the other replica requires under TLS (wss)."""
    parts = urlsplit(api)
    scheme = "wss" if parts.scheme == "https" else "ws"
    url = urlunsplit(
        (scheme, parts.netloc, parts.path.rstrip("/") + (path or ALIVE_PATH), "", "")
    )
    try:
        context = tls.refresh() if tls is not None and scheme == "wss" else None
        with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                        ssl=context, open_timeout=1.0, close_timeout=0.5, ping_interval=None) as ws:
            while not stop.is_set():
                ws.recv(timeout=3.0)
                if not still_relevant():
                    return False
    except ConnectionClosedError as exc:
        return exc.rcvd is None
    except (OSError, TimeoutError, WebSocketException):
        return False
    return False


ALIVE_PATH = "/api/v1/replicas/alive"
MEMBER_ALIVE_PATH = "/api/v1/replicas/member-alive"
