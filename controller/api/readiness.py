"""GET /readyz: whether this replica does its job now, apart from /healthz (the
process answers).  No token, like /healthz, for probes and the controller role's
restart handler; the answer names which check failed and counts, never a host.

Ready when every check holds (docs/operations.md, "Readiness"):

* `store`: the store answers a read;
* `role`: this replica leads (masters every switch, or assigns them) or is a
  member with switches assigned (docs/architecture.md, "Replicas");
* `switches`: every registered host's switch is connected to this replica (each
  switch connects to every replica, so any of them can take it over), and every
  connected switch it should master has confirmed it as master (role reply);
* `agents`: the agent of every host whose switch it masters holds its stream.

The wait is bounded: for `ready_wait` seconds after the start (ApiContext.started),
a switch that has not connected and an agent that does not stream hold readiness
back, so a restarted replica is not ready before its switches are back and
mastered.  Past them such a switch or agent is only counted (`absent`, `silent`):
a host that is down must not keep every replica unready for good.  A connected
switch that has not confirmed our mastership holds it back at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.api.deps import ApiContext, Ctx

router = APIRouter()


@dataclass(frozen=True)
class Counts:
    """What the switch and agent checks saw (numbers only)."""

    switches_expected: int  # registered hosts' switches
    switches_connected: int  # connected to this replica, master or slave
    switches_absent: int  # registered, not connected
    switches_to_master: int  # connected, this replica should master them
    switches_unconfirmed: int  # of those, not yet confirmed as mastered
    agents_expected: int  # hosts whose switch this replica masters
    agents_silent: int  # of those, agents not streaming to this replica


def count(ctx: ApiContext) -> Counts:
    roles = ctx.roles
    hosts = ctx.inventory.index.hosts()
    connected = roles.connected_now()
    mastered = set(roles.mastered)
    present = [h for h in hosts if h.dpid in connected]
    ours = [h for h in present if _should_master(ctx, h.dpid)]
    streaming = set(ctx.hub.connected()) if ctx.hub is not None else set()
    served = [h for h in ours if h.dpid in mastered]
    return Counts(
        switches_expected=len(hosts),
        switches_connected=len(connected),
        switches_absent=len(hosts) - len(present),
        switches_to_master=len(ours),
        switches_unconfirmed=len(ours) - len(served),
        agents_expected=len(served),
        agents_silent=sum(1 for h in served if h.name not in streaming),
    )


def checks(ctx: ApiContext, counts: Counts) -> dict[str, str]:
    """Each check's result: "ok" or why not."""
    out: dict[str, str] = {}
    try:
        ctx.inventory.store.revision()
        out["store"] = "ok"
    except Exception as exc:  # any failure of the store is "not ready", with its reason
        out["store"] = f"unreachable: {type(exc).__name__}"
    member = ctx.masters is not None and ctx.masters.is_member
    out["role"] = "ok" if ctx.leads() or member else "neither leading nor a member"
    waiting = ctx.clock() - ctx.started < ctx.ready_wait
    if counts.switches_unconfirmed:
        out["switches"] = f"{counts.switches_unconfirmed} connected switch(es) not yet mastered"
    elif counts.switches_absent and waiting:
        out["switches"] = (f"{counts.switches_absent} registered switch(es) not connected "
                           "yet (waiting since the start)")
    else:
        out["switches"] = "ok"
    silent = counts.agents_silent
    out["agents"] = (f"{silent} agent(s) not streaming" if silent and waiting else "ok")
    return out


def _should_master(ctx: ApiContext, dpid: int) -> bool:
    roles = ctx.roles
    if roles.spread:
        return roles.me is not None and roles.owner(dpid) == roles.me
    return roles.master is not None


@router.get("/readyz", tags=["health"], summary="Readiness (no auth)", response_model=None)
def readyz(ctx: Ctx) -> dict[str, Any] | JSONResponse:
    counts = count(ctx)
    result = checks(ctx, counts)
    body = {"checks": result, "counts": vars(counts)}
    if all(v == "ok" for v in result.values()):
        return {"status": "ready", **body}
    return JSONResponse({"status": "not ready", **body}, status_code=503)
