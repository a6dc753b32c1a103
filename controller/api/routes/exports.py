"""Requests between controller replicas when masters are spread over them
(docs/architecture.md, "Spread masters"); admin token only.

* `POST /replicas/needs`: another replica's switches' route needs on a host whose
  switch we master (controller/cluster/exports.py sends them); answered once the host's
  agent holds them.
* `POST /replicas/agent-command`: a command for the agent of a host we master
  (key rotation, container moves started at another replica).
* `GET /replicas/routes`: the live connections through our switches only; `GET
  /routes` at any replica merges every member's (controller/api/routes/live.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from controller.agents.hub import AgentHub, CommandError
from controller.api.auth import RequireAdmin
from controller.api.deps import Ctx
from controller.cluster.exports import EXPORT_TIMEOUT

router = APIRouter(dependencies=[RequireAdmin])

IPv4 = ipaddress.IPv4Address


class NeedsIn(BaseModel):
    sender: str
    host: str
    generation: int = Field(ge=0)
    token: int = Field(ge=0)
    needs: dict[int, dict[IPv4, IPv4]]


class AgentCommandIn(BaseModel):
    host: str
    op: str
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: Annotated[float, Field(gt=0, le=300)] = 60.0


def _spread_runtime(ctx: Ctx) -> Any:
    runtime = ctx.runtime
    if getattr(runtime, "me", None) is None:
        raise HTTPException(404, "masters are not spread over replicas here")
    return runtime


@router.post("/replicas/needs", summary="Another replica's route needs on our host")
async def import_needs(ctx: Ctx, body: NeedsIn) -> dict[str, bool]:
    runtime = _spread_runtime(ctx)
    if not runtime.serves(body.host):
        raise HTTPException(409, f"this replica does not master host {body.host}")
    wait = runtime.import_needs(body.host, body.generation, body.token,
                               {d: dict(n) for d, n in body.needs.items()})
    done = await asyncio.to_thread(wait.done.wait, EXPORT_TIMEOUT)
    if not done:
        runtime.forget_import(wait)
    return {"ok": bool(done and wait.ok)}


@router.post("/replicas/agent-command", summary="A command for the agent of our host")
async def agent_command(ctx: Ctx, request: Request, body: AgentCommandIn) -> dict[str, Any]:
    runtime = _spread_runtime(ctx)
    hub: AgentHub | None = getattr(request.app.state, "hub", None)
    if hub is None or not runtime.serves(body.host):
        raise HTTPException(409, f"this replica does not master host {body.host}")
    try:
        return await hub.command(body.host, body.op, body.args, timeout=body.timeout)
    except CommandError as exc:
        raise HTTPException(503, str(exc)) from None


@router.get("/replicas/routes", summary="Live connections through our switches only")
def local_routes(ctx: Ctx, host: str | None = None) -> list[dict[str, Any]]:
    return list(_spread_runtime(ctx).routes(host))
