"""WebSocket endpoint of the agent stream (protocol: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from controller.agents.hub import CLOSE_TYPE, Session
from controller.agents.messages import CLOSE_NOT_SERVED_HERE, not_master_reason
from controller.api.auth import close_reason, refuse_websocket, revoked_since, stream_refusal
from controller.api.deps import ApiContext, Ctx

log = logging.getLogger(__name__)
router = APIRouter()

# WebSocket close codes in the private range (4000-4999), after the HTTP statuses
# they mirror, so an agent (or a replica holding a liveness stream) can tell them apart.
CLOSE_UNAUTHORIZED = 4401  # no valid bearer token
CLOSE_FORBIDDEN = 4403  # a credential that may not open this stream (or revoked since)
CLOSE_UNKNOWN_HOST = 4404  # the host is not registered
# How often an open stream checks that its host's certificate is not revoked since it
# connected (docs/security.md, "Revocation": closed within 2 s).
REVOCATION_CHECK = 0.5
__all__ = ["CLOSE_FORBIDDEN", "CLOSE_NOT_SERVED_HERE", "CLOSE_UNAUTHORIZED", "CLOSE_UNKNOWN_HOST",
           "router"]


@router.websocket("/hosts/{name}/stream")
async def agent_stream(websocket: WebSocket, name: str, ctx: Ctx) -> None:
    # A refusal is a close frame after the handshake, not an HTTP 403 before it: only
    # a close frame carries the code and the reason, and the reason of a 4503 names
    # the replica the agent must go to (during a handover the one it just left).
    refusal = stream_refusal(ctx, websocket.scope, name)
    if refusal is not None:
        await refuse_websocket(websocket, refusal)
        return
    if ctx.inventory.index.host(name) is None:
        await _refuse(websocket, CLOSE_UNKNOWN_HOST, f"host {name} is not registered")
        return
    hub = ctx.hub
    if hub is None or not ctx.runtime.serves(name):
        await _refuse(websocket, CLOSE_NOT_SERVED_HERE, not_serving_reason(ctx, name))
        return
    await websocket.accept()
    client = websocket.client
    session = hub.open(name, f"{client.host}:{client.port}" if client else "")
    log.info("agent %s connected", name)
    sender = asyncio.create_task(_send_loop(websocket, ctx, session))
    guard = asyncio.create_task(_close_when_revoked(websocket, ctx))
    try:
        while True:
            hub.answer(session, await websocket.receive_json())
    except WebSocketDisconnect:
        pass
    finally:
        for task in (sender, guard):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        hub.close(session)
        log.info("agent %s disconnected", name)


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


def not_serving_reason(ctx: ApiContext, host: str) -> str:
    """Why this replica refuses `host`'s stream, and where to go instead."""
    if ctx.roles.spread:
        return not_master_reason(host, ctx.runtime.owner_api(host))
    return "not the leader; no leader now"  # the only controller, before it leads


async def _close_when_revoked(websocket: WebSocket, ctx: ApiContext) -> None:
    """Close the stream once its caller's certificate is revoked (by this replica or,
    through the store's watch, by another)."""
    if ctx.revocations is None:
        return
    while True:
        await asyncio.sleep(REVOCATION_CHECK)
        reason = revoked_since(ctx, websocket.scope)
        if reason is not None:
            log.warning("closing the stream of %s: %s", websocket.path_params.get("name"),
                        reason)
            with contextlib.suppress(RuntimeError, OSError):
                await websocket.close(code=CLOSE_FORBIDDEN, reason=close_reason(reason))
            return


async def _send_loop(websocket: WebSocket, ctx: ApiContext, session: Session) -> None:
    while True:
        message = await session.queue.get()
        if message.get("type") == CLOSE_TYPE:
            # replaced by a newer stream of the host (CLOSE_REPLACED), or not served here
            await websocket.close(code=message.get("code") or CLOSE_NOT_SERVED_HERE,
                                  reason=message.get("reason")
                                  or not_serving_reason(ctx, session.host))
            return
        await websocket.send_json(message)
