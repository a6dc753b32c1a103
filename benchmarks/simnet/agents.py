"""Simulated host agents on the real agent stream (controller/agents/messages.py).

Each agent holds its host's WebSocket stream, applies nothing and acknowledges
every numbered message (snapshot, delta, nat, mesh, names) after `ack_delay` seconds, one
after the other as the real agent's route thread does; commands get an ok result.
It reconnects after the controller goes away or refuses it (not yet the leader, or
another replica serves the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import time
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

STATE_KINDS = frozenset({"snapshot", "delta", "nat", "mesh", "names"})
RECONNECT_S = 0.2


@dataclass
class AgentStats:
    connects: int = 0
    acks: int = 0
    snapshot_at: float | None = None  # first snapshot after the last connect
    errors: int = 0
    last_error: str = ""


class SimAgent:
    def __init__(self, host: str, urls: list[str], token: str, ack_delay: float,
                 tls: ssl.SSLContext | None = None) -> None:
        """`urls`: every replica's API; the agent moves on to the next one when a
        replica refuses its stream (it does not serve the host) or goes away."""
        self.host = host
        # http: -> ws:, https: -> wss:
        self.urls = [f"ws{u.removeprefix('http')}/api/v1/hosts/{host}/stream" for u in urls]
        self.token = token
        self.ack_delay = ack_delay
        self.tls = tls
        self.stats = AgentStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        for i in itertools.count():
            try:
                async with connect(self.urls[i % len(self.urls)], ssl=self.tls, max_size=None,
                                   additional_headers={"Authorization": f"Bearer {self.token}"},
                                   ping_interval=None, open_timeout=30) as ws:
                    self.stats.connects += 1
                    self.stats.snapshot_at = None
                    await self._serve(ws)
            except (OSError, WebSocketException, TimeoutError):
                pass
            except Exception as exc:  # a message it did not expect: say so, go on
                self.stats.errors += 1
                self.stats.last_error = repr(exc)
            await asyncio.sleep(RECONNECT_S)

    async def _serve(self, ws: ClientConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            kind, seq = msg.get("type"), msg.get("seq")
            if kind == "command":
                await ws.send(json.dumps({"type": "result", "seq": seq, "ok": True, "data": {}}))
                continue
            if kind not in STATE_KINDS:
                continue
            if self.ack_delay > 0:
                await asyncio.sleep(self.ack_delay)
            await ws.send(json.dumps({"type": "ack", "seq": seq}))
            self.stats.acks += 1
            if kind == "snapshot" and self.stats.snapshot_at is None:
                self.stats.snapshot_at = time.monotonic()
