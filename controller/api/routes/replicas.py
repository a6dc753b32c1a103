"""GET /api/v1/replicas: the controller replicas and which one leads (read-only);
DELETE /api/v1/replicas/{name}: forget a replica that was taken out of service.

Replicated controllers (etcd): every replica's record, the leader key, the
memberships and the switch assignment (controller/cluster/masters.py), read from the store,
so any replica answers alike (a follower does not forward this).  The
standalone controller (SQLite) writes no record: it answers its own, as the leader.

A record outlives its replica (a stopped replica comes back under its name), so its
OpenFlow target is given to every host that registers until an operator removes it;
only a replica that is neither leading nor answering on its API may be removed.
"""

from __future__ import annotations

import ssl

import httpx
from fastapi import APIRouter, Depends, HTTPException, Response, status

from controller.api.auth import BearerToken, RequireToken, Role
from controller.api.deps import ApiContext, Ctx
from controller.api.schemas import ReplicaOut, ReplicasOut
from controller.cluster.leases import REPLICAS
from controller.cluster.masters import ASSIGNMENT, ASSIGNMENT_KEY, REACH, parse_assignment

router = APIRouter(prefix="/replicas", tags=["replicas"], dependencies=[RequireToken])
RequireReplicaAdmin = Depends(BearerToken(frozenset({Role.ADMIN, Role.REPLICA}), "replicas"))
# How long a replica's API may take to show it is still running.
LIVENESS_TIMEOUT = 1.0


@router.get("", summary="List the controller replicas and the leader")
def list_replicas(ctx: Ctx) -> ReplicasOut:
    store = ctx.inventory.store
    hosts = ctx.inventory.index.hosts()
    if ctx.inventory.replicated:
        records = store.list(REPLICAS)
        current = store.leader()
        name = str(current[0].get("name")) if current else None
        generation = current[1] if current else None
        members = store.members()
        masters, assigned_at = parse_assignment(store.get(ASSIGNMENT, ASSIGNMENT_KEY))
        by_dpid = {h.dpid: h.name for h in hosts}
        switches: dict[str, list[str]] = {}
        for dpid, replica in masters.items():
            if dpid in by_dpid:
                switches.setdefault(replica, []).append(by_dpid[dpid])
        return ReplicasOut(
            leader=name, generation=generation, assignment_generation=assigned_at or None,
            replicas=[
                ReplicaOut.of(r, name, str(r.get("name")) in members,
                              switches.get(str(r.get("name")), []))
                for r in records
            ],
        )
    # the only controller leads from start to stop (controller/cluster/leases.py)
    records = [ctx.replica] if ctx.replica else []
    name = str(ctx.replica["name"]) if ctx.replica else None
    generation = ctx.leadership.generation if ctx.leadership is not None else None
    return ReplicasOut(
        leader=name, generation=generation,
        replicas=[ReplicaOut.of(r, name, True, [h.name for h in hosts]) for r in records],
    )


def _running(api: object, ctx: ApiContext) -> bool:
    """Does the replica's advertised API answer /healthz?"""
    if not isinstance(api, str) or not api:
        return False
    verify: ssl.SSLContext | bool = (ctx.client_tls.refresh() if ctx.client_tls is not None
                                     else True)
    try:
        return httpx.get(f"{api.rstrip('/')}/healthz", timeout=LIVENESS_TIMEOUT,
                         verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[RequireReplicaAdmin],
    summary="Forget a stopped replica (its OpenFlow target is no longer handed out)",
)
def remove_replica(name: str, ctx: Ctx) -> Response:
    if not ctx.inventory.replicated:
        raise HTTPException(409, "a standalone controller (SQLite) has no replica records")
    store = ctx.inventory.store
    record = store.get(REPLICAS, name)
    if record is None:
        raise HTTPException(404, f"no replica {name}")
    if _running(record.get("api"), ctx):
        raise HTTPException(
            409, f"replica {name} is running (its API answers at {record.get('api')}): "
            "stop it first")
    with store.exclusive():
        current = store.leader()
        if current and current[0].get("name") == name:
            raise HTTPException(
                409, f"replica {name} leads (generation {current[1]}): stop it first, "
                "another replica then leads")
        with store.transaction():  # the record and its reach go together
            if not store.delete(REPLICAS, name):
                raise HTTPException(404, f"no replica {name}")
            store.delete(REACH, name)  # its last report of the switches connected to it
    return Response(status_code=status.HTTP_204_NO_CONTENT)
