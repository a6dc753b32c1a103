"""Liveness streams between controller replicas (docs/architecture.md, "Replicas").

`/replicas/alive` is served while this replica leads, `/replicas/member-alive` while
it is a member: the other replicas hold them open, and one that breaks without a
close frame means this process died, so its leadership or membership is ended at
once instead of when its lease expires.  (Requests that need a switch's master are
not forwarded here: controller/api/routes/live.py merges every member's routes, and
agent commands go through controller/api/routes/exports.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from controller.api.auth import refuse_websocket, replica_refusal
from controller.api.deps import ApiContext, Ctx
from controller.api.routes.stream import CLOSE_NOT_SERVED_HERE

ALIVE_EVERY = 0.5  # seconds between the leader's "alive" messages

router = APIRouter()


@router.websocket("/replicas/alive")
async def leader_alive(websocket: WebSocket, ctx: Ctx) -> None:
    """Held open by the other members while this replica leads (controller/cluster/leases.py):
    if it breaks without a close frame, this process died, and a member ends its
    leadership at once instead of waiting for the lease to expire."""
    lease = ctx.leadership
    await _alive(websocket, ctx, lambda: lease is not None and lease.held, "the leader")


@router.websocket("/replicas/member-alive")
async def member_alive(websocket: WebSocket, ctx: Ctx) -> None:
    """Held open by the leader while this replica is a member (controller/cluster/masters.py),
    for the same reason: a member whose process died loses its switches at once."""
    masters = ctx.masters
    await _alive(websocket, ctx, lambda: masters is not None and masters.is_member, "a member")


async def _alive(
    websocket: WebSocket, ctx: ApiContext, lasting: Callable[[], bool], what: str
) -> None:
    refusal = replica_refusal(ctx, websocket.scope, f"the liveness stream of {what}")
    if refusal is not None:
        await refuse_websocket(websocket, refusal)
        return
    if not lasting():
        await websocket.close(code=CLOSE_NOT_SERVED_HERE, reason=f"not {what}")
        return
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while lasting():
            await websocket.send_text("alive")
            await asyncio.sleep(ALIVE_EVERY)
        await websocket.close(code=CLOSE_NOT_SERVED_HERE, reason=f"no longer {what}")
