"""Requests only the leading replica can answer, forwarded to it by the others.

Every replica serves the whole API: desired state is in the shared store, so any
replica reads and writes it.  Three things live only in the leader: the live
routes (its core), and the commands it sends through the agent streams (key
rotation, container move).  A follower forwards those requests to the leader's
advertised API URL, with the caller's token, and returns its answer; when no
replica leads (an election is under way), it answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import httpx
from fastapi import APIRouter, FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from starlette.responses import JSONResponse

from controller.api.auth import check_token

log = logging.getLogger(__name__)

LEADER_ONLY = re.compile(
    r"^/api/v1/(routes|hosts/[^/]+/rotate-key|containers/[^/]+/move)/?$"
)
# Hop-by-hop headers (RFC 9110 7.6.1) and those httpx sets itself.
_DROP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te",
                   "upgrade", "content-length", "proxy-authorization", "trailer"})
FORWARD_TIMEOUT = 130.0  # a container move waits up to 120 s for `docker run`
FORWARDED_HEADER = "x-daolinet-forwarded"
ALIVE_EVERY = 0.5  # seconds between the leader's "alive" messages
CLOSE_NOT_LEADER = 4503

router = APIRouter()


@router.websocket("/replicas/alive")
async def leader_alive(websocket: WebSocket) -> None:
    """Held open by the followers while this replica leads (controller/replica.py): if
    it breaks without a close frame, this process died, and a follower ends its
    leadership at once instead of waiting for the lease to expire."""
    replica = getattr(websocket.app.state, "replica", None)
    await _alive(websocket, lambda: replica is not None and replica.is_leader, "the leader")


@router.websocket("/replicas/member-alive")
async def member_alive(websocket: WebSocket) -> None:
    """Held open by the leader while this replica is a member (controller/masters.py),
    for the same reason: a member whose process died loses its switches at once."""
    masters = getattr(websocket.app.state, "masters", None)
    await _alive(websocket, lambda: masters is not None and masters.is_member, "a member")


async def _alive(websocket: WebSocket, lasting: Callable[[], bool], what: str) -> None:
    ctx = websocket.app.state.ctx
    if not check_token(ctx, websocket.headers.get("authorization")):
        await websocket.close(code=4401, reason="invalid or missing bearer token")
        return
    if not lasting():
        await websocket.close(code=CLOSE_NOT_LEADER, reason=f"not {what}")
        return
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while lasting():
            await websocket.send_text("alive")
            await asyncio.sleep(ALIVE_EVERY)
        await websocket.close(code=CLOSE_NOT_LEADER, reason=f"no longer {what}")


def install_leader_forwarding(
    app: FastAPI,
    is_leader: Callable[[], bool],
    leader_url: Callable[[], str | None],
) -> None:
    @app.middleware("http")
    async def forward_to_leader(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not LEADER_ONLY.match(request.url.path) or is_leader():
            return await call_next(request)
        if request.headers.get(FORWARDED_HEADER):
            # Forwarded here by a replica that took us for the leader: no loops.
            return _unavailable("this replica is not the leader (an election is under way)")
        url = leader_url()
        if not url:
            return _unavailable("no controller replica leads now; retry in a few seconds")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        headers[FORWARDED_HEADER] = "1"
        target = url.rstrip("/") + request.url.path
        try:
            async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT) as client:
                answer = await client.request(
                    request.method, target, params=request.query_params,
                    headers=headers, content=await request.body(),
                )
        except httpx.HTTPError as exc:
            log.warning("could not forward %s to the leader %s: %s", request.url.path, url, exc)
            return _unavailable(f"the leader {url} did not answer: {exc}")
        keep = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP
                and k.lower() != "content-encoding"}
        return Response(answer.content, status_code=answer.status_code, headers=keep)


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
