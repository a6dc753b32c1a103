"""The agent stream hub: one live session per host agent, ordered, acknowledged.

Each session owns an asyncio queue drained by its WebSocket; other threads hand
it messages with call_soon_threadsafe.  Every message carries a sequence number;
the agent acks it once applied, and the hub turns acks (or a lost session) into
core events through the fabric.  A session's first message is always the full
snapshot, sent once the host's switch has been synced.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from controller.core import KernelRouteDelta
from controller.fabric import Fabric

log = logging.getLogger(__name__)


@dataclass
class Session:
    host: str
    queue: asyncio.Queue[dict[str, Any]]
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tokens: dict[int, int | None] = field(default_factory=dict)  # seq -> core token
    ready: bool = False  # snapshot sent; deltas may follow


class AgentHub:
    def __init__(self, fabric: Fabric, loop: asyncio.AbstractEventLoop) -> None:
        self.fabric = fabric
        self.loop = loop
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        fabric.agents = self

    # called from the WebSocket endpoint (event loop) ---------------------------------
    def open(self, host: str) -> Session:
        session = Session(host, asyncio.Queue())
        with self._lock:
            old = self._sessions.get(host)
            self._sessions[host] = session
        if old is not None:
            self._fail_all(old)
        self._offer_snapshot(session)
        return session

    def close(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.host) is session:
                del self._sessions[session.host]
        self._fail_all(session)

    def answer(self, session: Session, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        if not isinstance(seq, int):
            log.warning("agent %s sent a message without seq: %s", session.host, message)
            return
        with self._lock:
            token = session.tokens.pop(seq, None)
        if token is None:
            return
        if message.get("type") == "ack":
            self.fabric.handle(self.fabric.core.routes_acked, session.host, token)
        else:
            log.error("agent %s could not apply routes: %s", session.host, message.get("error"))
            self.fabric.handle(self.fabric.core.routes_failed, session.host, token)

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(h for h, s in self._sessions.items() if s.ready)

    # called from any thread (fabric effects) -----------------------------------------
    def send_delta(self, delta: KernelRouteDelta) -> None:
        with self._lock:
            session = self._sessions.get(delta.host)
            if session is not None and session.ready:
                seq = next(session.seq)
                session.tokens[seq] = delta.token
                message = {
                    "type": "delta",
                    "seq": seq,
                    "add": [r.model_dump(mode="json", exclude_none=True) for r in delta.add],
                    "remove": [r.model_dump(mode="json", exclude_none=True) for r in delta.remove],
                }
                self.loop.call_soon_threadsafe(session.queue.put_nowait, message)
                return
        # No agent to hold the routes: the setup waiting for them fails now rather
        # than at its timeout.  Without a token there is nothing to wait for; the
        # agent's snapshot will carry the change when it connects.
        if delta.token is not None:
            self.fabric.handle(self.fabric.core.routes_failed, delta.host, delta.token)

    def host_synced(self, host: str) -> None:
        with self._lock:
            session = self._sessions.get(host)
        if session is not None and not session.ready:
            self._offer_snapshot(session)

    # internals ------------------------------------------------------------------------
    def _offer_snapshot(self, session: Session) -> None:
        snap = self.fabric.snapshot(session.host)
        if snap is None:
            log.info("agent %s waits for its switch to sync before its snapshot", session.host)
            return
        token, routes = snap
        with self._lock:
            if session.ready:
                return
            seq = next(session.seq)
            session.tokens[seq] = token
            session.ready = True
            message = {"type": "snapshot", "seq": seq, "routes": routes}
            self.loop.call_soon_threadsafe(session.queue.put_nowait, message)

    def _fail_all(self, session: Session) -> None:
        with self._lock:
            tokens = [t for t in session.tokens.values() if t is not None]
            session.tokens.clear()
            session.ready = False
        for token in tokens:
            self.fabric.handle(self.fabric.core.routes_failed, session.host, token)
