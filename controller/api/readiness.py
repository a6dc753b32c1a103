"""GET /readyz: whether this replica does its job now, apart from /healthz (the
process answers).  No token, like /healthz, for probes and restart handlers; the
answer names which check failed and how many, never which host.

Ready when every check holds:

* `store`: the store answers a read;
* `role`: this replica leads (masters every switch, or assigns them) or is a
  member with switches assigned (docs/architecture.md, "Replicas");
* `switches`: every switch connected to this replica that it should master has
  confirmed it as master (role reply);
* `agents`: the agent of every host whose switch it masters holds its stream.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.api.deps import ApiContext, Ctx

router = APIRouter()


def checks(ctx: ApiContext) -> dict[str, str]:
    """Each check's result: "ok" or why not."""
    out: dict[str, str] = {}
    try:
        ctx.inventory.store.revision()
        out["store"] = "ok"
    except Exception as exc:  # any failure of the store is "not ready", with its reason
        out["store"] = f"unreachable: {type(exc).__name__}"
    roles = ctx.roles
    member = ctx.masters is not None and ctx.masters.is_member
    out["role"] = "ok" if ctx.leads() or member else "neither leading nor a member"
    hosts = ctx.inventory.index.hosts()
    ours = [h for h in hosts if _should_master(ctx, h.dpid)]
    connected = roles.connected_now()
    waiting = [h for h in ours if h.dpid in connected and h.dpid not in roles.mastered]
    out["switches"] = ("ok" if not waiting
                       else f"{len(waiting)} connected switch(es) not yet mastered")
    streaming = set(ctx.hub.connected()) if ctx.hub is not None else set()
    silent = [h for h in ours if h.dpid in roles.mastered and h.name not in streaming]
    out["agents"] = "ok" if not silent else f"{len(silent)} agent(s) not streaming"
    return out


def _should_master(ctx: ApiContext, dpid: int) -> bool:
    roles = ctx.roles
    if roles.spread:
        return roles.me is not None and roles.owner(dpid) == roles.me
    return roles.master is not None


@router.get("/readyz", tags=["health"], summary="Readiness (no auth)", response_model=None)
def readyz(ctx: Ctx) -> dict[str, Any] | JSONResponse:
    result = checks(ctx)
    if all(v == "ok" for v in result.values()):
        return {"status": "ready", "checks": result}
    return JSONResponse({"status": "not ready", "checks": result}, status_code=503)
