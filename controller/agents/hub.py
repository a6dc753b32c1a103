"""The agent stream hub: one live session per host agent, ordered, acknowledged.

Each session owns an asyncio queue drained by its WebSocket; other threads hand
it messages with call_soon_threadsafe.  Every message carries a sequence number;
the agent acks it once applied, and the hub turns acks (or a lost session) into
core events through the runtime.  A session's first message is always the full
snapshot, sent once the host's switch has been synced.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from controller.agents.messages import (
    CLOSE_HOST_REMOVED,
    CLOSE_REPLACED,
    Ack,
    CommandMessage,
    DeltaMessage,
    MeshHost,
    MeshMessage,
    Nack,
    NamesMessage,
    NatMessage,
    Result,
    SnapshotMessage,
    parse_reply,
)
from controller.agents.names import SourceNames
from controller.agents.names_cache import NamesCache
from controller.datapath.effects import KernelRouteDelta
from controller.datapath.runtime import DatapathRuntime
from controller.desired.events import Change
from controller.desired.models import Host, NatRule
from controller.trust.tls import ClientContext

log = logging.getLogger(__name__)

AGENT_COMMAND_PATH = "/api/v1/replicas/agent-command"


@dataclass
class Session:
    host: str
    queue: asyncio.Queue[dict[str, Any]]
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tokens: dict[int, int | None] = field(default_factory=dict)  # seq -> core token
    ready: bool = False  # snapshot sent; deltas may follow
    commands: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    peer: str = ""  # the agent's address and port, for the logs
    names: list[SourceNames] | None = None  # the names table last sent


# Queued to a session's stream to end it (not sent to the agent): `close_message()`.
CLOSE_TYPE = "_close"


def close_message(code: int | None = None, reason: str = "") -> dict[str, Any]:
    """The queue item that ends a session's stream with `code` and `reason` (None:
    the route's "not served here")."""
    return {"type": CLOSE_TYPE, "code": code, "reason": reason}


class CommandError(Exception):
    """A command to an agent failed (the agent said why, or it is not connected)."""


class AgentHub:
    def __init__(self, runtime: DatapathRuntime, *, token: str = "",
                 tls: ClientContext | None = None) -> None:
        """`token`: the API token, for commands through other replicas (`tls`: our
        replica certificate, which they require under TLS).  Made with
        the runtime (its `agents` factory); the event loop of the streams is the
        API server's, known once the first stream opens (`open`)."""
        self.runtime = runtime
        self.replica_token = token
        self.replica_tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self.names = NamesCache()  # the connected hosts' names tables

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The API server's event loop, which runs every stream (set by `open`)."""
        if self._loop is None:
            raise RuntimeError("no agent stream has opened yet")
        return self._loop

    # called from the WebSocket endpoint (event loop) ---------------------------------
    def open(self, host: str, peer: str = "") -> Session:
        """The session of a new stream of `host`.  The newer stream wins: an older one
        is closed with CLOSE_REPLACED and a reason naming the newer one's peer, so its
        agent (if it still listens: in a reconnect race it is gone) knows why."""
        self._loop = asyncio.get_running_loop()
        session = Session(host, asyncio.Queue(), peer=peer)
        with self._lock:
            old = self._sessions.get(host)
            self._sessions[host] = session
        if old is not None:
            log.warning("agent %s: a newer stream (from %s) replaces the one from %s, "
                        "which is closed", host, peer or "?", old.peer or "?")
            old.queue.put_nowait(close_message(
                CLOSE_REPLACED, f"replaced by a newer stream of host {host} from {peer or '?'}"
            ))
            self._fail_all(old)
        self._offer_snapshot(session)
        return session

    def close(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.host) is session:
                del self._sessions[session.host]
                self.names.forget(session.host)  # kept up to date for connected hosts only
        self._fail_all(session)

    def answer(self, session: Session, message: dict[str, Any]) -> None:
        reply = parse_reply(message)
        if reply is None:
            log.warning("agent %s sent a message without seq: %s", session.host, message)
            return
        seq = reply.seq
        if isinstance(reply, Result):
            future = session.commands.pop(seq, None)
            if future is not None and not future.done():
                if reply.ok:
                    future.set_result(reply.data or {})
                else:
                    future.set_exception(CommandError(reply.error or "failed"))
            return
        with self._lock:
            token = session.tokens.pop(seq, None)
        if token is None:
            if isinstance(reply, Nack) and reply.type == "nack":
                log.error("agent %s could not apply message %d: %s", session.host, seq,
                          reply.error)
            return
        if isinstance(reply, Ack):
            self.runtime.handle_timed(self.runtime.core.routes_acked, session.host, token)
        else:
            log.error("agent %s could not apply routes: %s", session.host, reply.error)
            self.runtime.handle_timed(self.runtime.core.routes_failed, session.host, token)

    async def command(
        self, host: str, op: str, args: dict[str, Any], timeout: float = 60.0
    ) -> dict[str, Any]:
        """Ask the agent of `host` to run `op`; its result data (CommandError if not).
        With masters spread over replicas, the agent of a host another replica
        masters is asked through that replica (`remote_command`)."""
        with self._lock:
            session = self._sessions.get(host)
        if session is None and self.runtime.roles.me is not None and not self.runtime.serves(host):
            return await self.remote_command(host, op, args, timeout)
        with self._lock:
            session = self._sessions.get(host)
            if session is None or not session.ready:
                raise CommandError(f"the agent of host {host} is not connected")
            seq = next(session.seq)
            future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
            session.commands[seq] = future
            message = CommandMessage(seq=seq, op=op, args=args).wire()
            self.loop.call_soon_threadsafe(session.queue.put_nowait, message)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CommandError(f"the agent of host {host} did not finish {op} in {timeout:g}s") \
                from None
        finally:
            session.commands.pop(seq, None)

    async def remote_command(
        self, host: str, op: str, args: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        url = self.runtime.owner_api(host)
        if url is None:
            raise CommandError(f"no controller replica masters host {host} now")
        body = {"host": host, "op": op, "args": args, "timeout": timeout}
        try:
            verify: ssl.SSLContext | bool = (self.replica_tls.refresh()
                                             if self.replica_tls is not None else True)
            async with httpx.AsyncClient(timeout=timeout + 5, verify=verify) as client:
                answer = await client.post(
                    url.rstrip("/") + AGENT_COMMAND_PATH, json=body,
                    headers={"Authorization": f"Bearer {self.replica_token}"},
                )
        except httpx.HTTPError as exc:
            raise CommandError(f"the replica {url} serving host {host} did not answer: "
                               f"{exc}") from None
        if answer.status_code != 200:
            detail = answer.json().get("detail") if answer.headers.get(
                "content-type", "").startswith("application/json") else answer.text
            raise CommandError(str(detail))
        data = answer.json()
        return data if isinstance(data, dict) else {}

    def drop_all(self) -> None:
        """Close every agent stream (this replica stopped leading): each agent moves
        on to another replica."""
        self.drop_hosts(None)

    def drop_hosts(self, hosts: set[str] | None) -> None:
        """Close the agent streams of `hosts` (None: all): this replica no longer
        masters their switches, and each agent moves on to another replica."""
        with self._lock:
            sessions = [s for h, s in self._sessions.items() if hosts is None or h in hosts]
        for session in sessions:
            self.loop.call_soon_threadsafe(session.queue.put_nowait, close_message())
            self.close(session)

    def host_removed(self, host: str) -> None:
        """Close the stream of a removed host with CLOSE_HOST_REMOVED: its agent stops
        instead of registering the host again (hostnet/agent/stream.py)."""
        with self._lock:
            session = self._sessions.get(host)
        if session is None:
            return
        log.info("agent %s: the host was removed; its stream is closed", host)
        self.loop.call_soon_threadsafe(session.queue.put_nowait, close_message(
            CLOSE_HOST_REMOVED, f"host {host} was removed from the controller"
        ))
        self.close(session)

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(h for h, s in self._sessions.items() if s.ready)

    # called from any thread (runtime effects) -----------------------------------------
    def send_delta(self, delta: KernelRouteDelta) -> None:
        with self._lock:
            session = self._sessions.get(delta.host)
            if session is not None and session.ready:
                seq = next(session.seq)
                session.tokens[seq] = delta.token
                message = DeltaMessage(
                    seq=seq, add=list(delta.add), remove=list(delta.remove)
                ).wire()
                self.loop.call_soon_threadsafe(session.queue.put_nowait, message)
        # No agent now: the agent's snapshot carries the change when it connects, and
        # answers what waits for this delta (Core.snapshot), so a setup waits for an
        # agent that is moving to this replica (a takeover: about a second) and fails
        # only at its timeout if none comes.

    def send_nat(self, host: str, rules: list[NatRule]) -> None:
        """The whole NAT set of `host` (level-triggered; nothing waits for the ack)."""
        with self._lock:
            session = self._sessions.get(host)
            if session is None or not session.ready:
                return  # sent after the snapshot when the agent connects
            self._queue_nat(session, rules)

    def _queue_nat(self, session: Session, rules: list[NatRule]) -> None:
        """Queue a nat message (caller holds the lock)."""
        seq = next(session.seq)
        session.tokens[seq] = None
        message = NatMessage(seq=seq, rules=rules).wire()
        self.loop.call_soon_threadsafe(session.queue.put_nowait, message)

    def send_mesh(self, hosts: list[Host]) -> None:
        """Every host's WireGuard facts to every agent (a host joined or rotated its
        key): each derives its peers from them (controller/datapath/sites.py)."""
        with self._lock:
            for session in self._sessions.values():
                if session.ready:
                    self._queue_mesh(session, hosts)

    def _queue_mesh(self, session: Session, hosts: list[Host]) -> None:
        """Queue a mesh message (caller holds the lock; nothing waits for the ack)."""
        seq = next(session.seq)
        session.tokens[seq] = None
        message = MeshMessage(seq=seq, hosts=[MeshHost.of(h) for h in hosts]).wire()
        self.loop.call_soon_threadsafe(session.queue.put_nowait, message)

    def names_changed(self, change: Change) -> None:
        """The connected agents' names tables after `change` (level-triggered: an
        agent gets a table only when it differs from the last one it got; nothing
        waits for the ack).  An agent that connects later gets its table after its
        snapshot.  Only what `change` may move is decided again (names_cache.py)."""
        view = self.runtime.index.view()
        touched = self.names.apply(view, change)
        for host in self.connected():
            if host not in touched and self.names.cached(host):
                continue
            tables = self.names.table(view, host)
            with self._lock:
                session = self._sessions.get(host)
                if session is not None and session.ready and session.names != tables:
                    self._queue_names(session, tables)

    def _queue_names(self, session: Session, tables: list[SourceNames]) -> None:
        """Queue a names message (caller holds the lock)."""
        seq = next(session.seq)
        session.tokens[seq] = None
        session.names = tables
        message = NamesMessage.of(seq, tables).wire()
        self.loop.call_soon_threadsafe(session.queue.put_nowait, message)

    def host_synced(self, host: str) -> None:
        with self._lock:
            session = self._sessions.get(host)
        if session is not None and not session.ready:
            self._offer_snapshot(session)

    # internals ------------------------------------------------------------------------
    def _offer_snapshot(self, session: Session) -> None:
        delay = self.runtime.snapshot_delay(session.host)
        if delay > 0:
            # just taken over: the other replicas' exports for this host are on
            # their way, and the snapshot must hold them
            self.loop.call_soon_threadsafe(
                self.loop.call_later, delay, self._offer_snapshot, session
            )
            return
        snap = self.runtime.snapshot(session.host)
        if snap is None:
            log.info("agent %s waits for its switch to sync before its snapshot", session.host)
            return
        token, routes = snap
        nat = self.runtime.nat_snapshot(session.host)
        mesh = self.runtime.mesh_hosts()
        names = self.names.table(self.runtime.index.view(), session.host)
        with self._lock:
            if session.ready:
                return
            seq = next(session.seq)
            session.tokens[seq] = token
            session.ready = True
            message = SnapshotMessage(seq=seq, routes=routes).wire()
            self.loop.call_soon_threadsafe(session.queue.put_nowait, message)
            self._queue_nat(session, nat)
            self._queue_mesh(session, mesh)
            self._queue_names(session, names)

    def _fail_all(self, session: Session) -> None:
        """The session ended: its commands fail.  Its route deltas in flight do not:
        the agent's next snapshot (here or at the replica it moves to) answers what
        waits for them (Core.snapshot), or the setup timeout does."""
        with self._lock:
            session.tokens.clear()
            session.ready = False
            commands = list(session.commands.values())
            session.commands.clear()
        for future in commands:
            if not future.done():
                self.loop.call_soon_threadsafe(
                    _fail_future, future,
                    CommandError(f"the agent of host {session.host} disconnected"),
                )


def _fail_future(future: asyncio.Future[dict[str, Any]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
