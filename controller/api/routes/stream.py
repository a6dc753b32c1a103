"""WebSocket endpoint of the agent stream (protocol: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from controller.agents.hub import CLOSE_TYPE, Session
from controller.api.auth import close_reason, refuse_websocket, revoked_since, stream_refusal
from controller.api.deps import ApiContext, Ctx

log = logging.getLogger(__name__)
router = APIRouter()

# WebSocket close codes in the private range (4000-4999), after the HTTP statuses
# they mirror, so an agent (or a replica holding a liveness stream) can tell them apart.
CLOSE_UNAUTHORIZED = 4401  # no valid bearer token
CLOSE_FORBIDDEN = 4403  # a credential that may not open this stream (or revoked since)
CLOSE_UNKNOWN_HOST = 4404  # the host is not registered
# This replica does not serve it (not the master of the host's switch, or not / no
# longer the leader or a member): the agent tries another replica.
CLOSE_NOT_SERVED_HERE = 4503
# How often an open stream checks that its host's certificate is not revoked since it
# connected (docs/security.md, "Revocation": closed within 2 s).
REVOCATION_CHECK = 0.5


@router.websocket("/hosts/{name}/stream")
async def agent_stream(websocket: WebSocket, name: str, ctx: Ctx) -> None:
    refusal = stream_refusal(ctx, websocket.scope, name)
    if refusal is not None:
        await refuse_websocket(websocket, refusal)
        return
    if ctx.inventory.index.host(name) is None:
        await websocket.close(code=CLOSE_UNKNOWN_HOST, reason=f"host {name} is not registered")
        return
    hub = ctx.hub
    if hub is None or not ctx.runtime.serves(name):
        await websocket.close(code=CLOSE_NOT_SERVED_HERE, reason=not_serving_reason(ctx, name))
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


def not_serving_reason(ctx: ApiContext, host: str) -> str:
    """Why this replica refuses `host`'s stream, and where to go instead."""
    if ctx.roles.spread:
        url = ctx.runtime.owner_api(host)
        return (f"not the master of {host}; {url} is" if url
                else f"not the master of {host}; no replica is now")
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
