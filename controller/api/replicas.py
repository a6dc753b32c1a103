"""GET /api/v1/replicas: the controller replicas and which one leads (read-only).

Replicated controllers (etcd): every replica's record and the leader key, read from
the store, so any replica answers alike (a follower does not forward this).  The
standalone controller (SQLite) writes no record: it answers its own, as the leader.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from controller.api.auth import RequireToken
from controller.api.deps import Ctx
from controller.api.schemas import ReplicaOut, ReplicasOut
from controller.replica import REPLICAS, Replica

router = APIRouter(prefix="/replicas", tags=["replicas"], dependencies=[RequireToken])


@router.get("", summary="List the controller replicas and the leader")
def list_replicas(ctx: Ctx, request: Request) -> ReplicasOut:
    store = ctx.inventory.store
    if ctx.inventory.replicated:
        records = store.list(REPLICAS)
        current = store.leader()
        name = str(current[0].get("name")) if current else None
        generation = current[1] if current else None
    else:  # the only controller leads from start to stop (controller/replica.py)
        records = [ctx.replica] if ctx.replica else []
        name = str(ctx.replica["name"]) if ctx.replica else None
        elector: Replica | None = getattr(request.app.state, "replica", None)
        generation = elector.generation if elector is not None else None
    return ReplicasOut(
        leader=name, generation=generation,
        replicas=[ReplicaOut.of(record, name) for record in records],
    )
