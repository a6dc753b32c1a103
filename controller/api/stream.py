"""WebSocket endpoint of the agent stream (protocol: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from controller.api.auth import check_token
from controller.hub import AgentHub, Session

log = logging.getLogger(__name__)
router = APIRouter()

# WebSocket close codes in the private range, so an agent can tell them apart.
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_HOST = 4404


@router.websocket("/hosts/{name}/stream")
async def agent_stream(websocket: WebSocket, name: str) -> None:
    ctx = websocket.app.state.ctx
    hub: AgentHub = websocket.app.state.hub
    if not check_token(ctx, websocket.headers.get("authorization")):
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="invalid or missing bearer token")
        return
    if ctx.inventory.index.host(name) is None:
        await websocket.close(code=CLOSE_UNKNOWN_HOST, reason=f"host {name} is not registered")
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


async def _send_loop(websocket: WebSocket, session: Session) -> None:
    while True:
        message = await session.queue.get()
        await websocket.send_json(message)
