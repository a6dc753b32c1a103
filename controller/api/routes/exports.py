"""Requests between controller replicas when masters are spread over them
(docs/architecture.md, "Replicas"); admin token only.

* `POST /replicas/needs`: another replica's switches' route needs on a host whose
  switch we master (controller/cluster/exports.py sends them); answered once the host's
  agent holds them.
* `POST /replicas/agent-command`: a command for the agent of a host we master
  (key rotation, container moves started at another replica).
* `GET /replicas/routes`: the live connections through our switches only; `GET
  /routes` at any replica merges every member's (controller/api/routes/live.py).
* `GET /replicas/connections`: this replica's connection log only; `GET
  /connections` merges every member's the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from controller.agents.hub import CommandError
from controller.api.auth import RequireReplica
from controller.api.connections import ConnectionQuery, local_page
from controller.api.deps import Ctx, HubDep, RolesDep, RuntimeDep
from controller.cluster.exports import EXPORT_TIMEOUT
from controller.cluster.roles import Roles
from controller.desired.models import Name

router = APIRouter(dependencies=[RequireReplica])

IPv4 = ipaddress.IPv4Address

# Bounds of what another replica sends (the body cap, --api-max-bulk-body, bounds the
# bytes; these the counts, so a refusal names the field).
MAX_SWITCHES = 4096  # switches in one export (every host of the deployment at most)
MAX_NEEDS = 1 << 18  # route needs of one switch
MAX_ARGS = 64  # arguments of one agent command

ReplicaName = Annotated[str, Field(min_length=1, max_length=253)]
SwitchNeeds = Annotated[dict[IPv4, IPv4], Field(max_length=MAX_NEEDS)]


class NeedsIn(BaseModel):
    sender: ReplicaName
    host: Name
    generation: int = Field(ge=0)
    token: int = Field(ge=0)
    needs: dict[int, SwitchNeeds] = Field(max_length=MAX_SWITCHES)


class AgentCommandIn(BaseModel):
    host: Name
    op: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict, max_length=MAX_ARGS)
    timeout: Annotated[float, Field(gt=0, le=300)] = 60.0


def _require_spread(roles: Roles) -> None:
    if not roles.spread:
        raise HTTPException(404, "masters are not spread over replicas here")


@router.post("/replicas/needs", summary="Another replica's route needs on our host")
async def import_needs(runtime: RuntimeDep, roles: RolesDep, body: NeedsIn) -> dict[str, bool]:
    _require_spread(roles)
    if not runtime.serves(body.host):
        raise HTTPException(409, f"this replica does not master host {body.host}")
    wait = runtime.import_needs(body.host, body.generation, body.token,
                               {d: dict(n) for d, n in body.needs.items()})
    done = await asyncio.to_thread(wait.done.wait, EXPORT_TIMEOUT)
    if not done:
        runtime.forget_import(wait)
    return {"ok": bool(done and wait.ok)}


@router.post("/replicas/agent-command", summary="A command for the agent of our host")
async def agent_command(
    runtime: RuntimeDep, roles: RolesDep, hub: HubDep, body: AgentCommandIn
) -> dict[str, Any]:
    _require_spread(roles)
    if hub is None or not runtime.serves(body.host):
        raise HTTPException(409, f"this replica does not master host {body.host}")
    try:
        return await hub.command(body.host, body.op, body.args, timeout=body.timeout)
    except CommandError as exc:
        raise HTTPException(503, str(exc)) from None


@router.get("/replicas/routes", summary="Live connections through our switches only")
def local_routes(
    runtime: RuntimeDep, roles: RolesDep, host: str | None = None
) -> list[dict[str, Any]]:
    _require_spread(roles)
    return list(runtime.routes(host))


@router.get("/replicas/connections", summary="Our own connection log only")
def local_connections(
    ctx: Ctx, roles: RolesDep, q: Annotated[ConnectionQuery, Query()]
) -> dict[str, Any]:
    _require_spread(roles)
    return local_page(ctx.connlog, q, str(ctx.replica["name"]) if ctx.replica else "")
