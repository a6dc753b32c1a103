"""/api/v1/networks: create, list, show, change options, delete.

The Docker network driver of a host creates a network on `docker network create`:
a host's certificate may (and without TLS the agent token), so Docker users keep
creating networks on their hosts.  Deleting one is for operators (and without TLS the
agent token): a network spans hosts, and one host's `docker network rm` must not take
it from the others (docs/security.md, "Identity per host").  Only operators may make a
network external or change its options: external access is policy.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from controller.api.auth import (
    RequireAdmin,
    RequireNetworkCreator,
    RequireNetworkWriter,
    RequireToken,
    Role,
    request_caller,
)
from controller.api.deps import Ctx
from controller.api.schemas import NetworkIn, NetworkOut, NetworkPatch

router = APIRouter(prefix="/networks", tags=["networks"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a network",
    dependencies=[RequireNetworkCreator],
)
def create_network(body: NetworkIn, ctx: Ctx, request: Request) -> NetworkOut:
    caller = request_caller(request, ctx)
    if body.external and caller.role not in (Role.ADMIN, Role.REPLICA):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{caller} may not create an external network (external: true): "
            "use the admin token",
        )
    network = ctx.inventory.create_network(
        body.name, body.subnet, body.gateway, body.mtu, external=body.external,
        internal=body.internal, reserved=body.reserved, labels=body.labels,
    )
    return NetworkOut.of(network)


@router.get("", summary="List networks", dependencies=[RequireToken])
def list_networks(ctx: Ctx) -> list[NetworkOut]:
    return [NetworkOut.of(n) for n in ctx.inventory.networks()]


@router.get("/{name}", summary="Show one network", dependencies=[RequireToken])
def get_network(name: str, ctx: Ctx) -> NetworkOut:
    return NetworkOut.of(ctx.inventory.network(name))


@router.patch(
    "/{name}",
    summary="Change a network's options (external access)",
    dependencies=[RequireAdmin],
)
def update_network(name: str, body: NetworkPatch, ctx: Ctx) -> NetworkOut:
    if body.external is None:
        return NetworkOut.of(ctx.inventory.network(name))
    return NetworkOut.of(ctx.inventory.set_network_external(name, body.external))


@router.delete(
    "/{name}",
    summary="Delete a network (409 while it has containers)",
    dependencies=[RequireNetworkWriter],
)
def delete_network(name: str, ctx: Ctx) -> NetworkOut:
    return NetworkOut.of(ctx.inventory.delete_network(name))
