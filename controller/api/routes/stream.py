"""WebSocket endpoint of the agent stream (protocol: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from controller.agents.hub import CLOSE_MESSAGE, AgentHub, Session
from controller.api.auth import check_token
from controller.api.deps import ApiContext

log = logging.getLogger(__name__)
router = APIRouter()

# WebSocket close codes in the private range, so an agent can tell them apart.
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_HOST = 4404
CLOSE_NOT_LEADER = 4503  # this replica does not serve the host: the agent tries another


@router.websocket("/hosts/{name}/stream")
async def agent_stream(websocket: WebSocket, name: str) -> None:
    ctx: ApiContext = websocket.app.state.ctx
    hub: AgentHub = websocket.app.state.hub
    if not check_token(ctx, websocket.headers.get("authorization")):
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="invalid or missing bearer token")
        return
    if ctx.inventory.index.host(name) is None:
        await websocket.close(code=CLOSE_UNKNOWN_HOST, reason=f"host {name} is not registered")
        return
    if not ctx.runtime.serves(name):
        await websocket.close(code=CLOSE_NOT_LEADER, reason=not_serving_reason(websocket, name))
        return
    await websocket.accept()
    session = hub.open(name)
    log.info("agent %s connected", name)
    sender = asyncio.create_task(_send_loop(websocket, session))
    try:
        while True:
            hub.answer(session, await websocket.receive_json())
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        hub.close(session)
        log.info("agent %s disconnected", name)


def not_serving_reason(websocket: WebSocket, host: str) -> str:
    """Why this replica refuses `host`'s stream, and where to go instead."""
    ctx: ApiContext = websocket.app.state.ctx
    if getattr(websocket.app.state, "masters", None) is not None:  # spread masters
        url = ctx.runtime.owner_api(host)
        return (f"not the master of {host}; {url} is" if url
                else f"not the master of {host}; no replica is now")
    leader = getattr(websocket.app.state, "leader", None)
    url = leader() if callable(leader) else None
    return f"not the leader; the leader is {url}" if url else "not the leader; no leader now"


async def _send_loop(websocket: WebSocket, session: Session) -> None:
    while True:
        message = await session.queue.get()
        if message == CLOSE_MESSAGE:
            await websocket.close(code=CLOSE_NOT_LEADER,
                                  reason=not_serving_reason(websocket, session.host))
            return
        await websocket.send_json(message)
