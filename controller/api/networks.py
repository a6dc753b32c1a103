"""/api/v1/networks: create, list, show, delete."""

from __future__ import annotations

from fastapi import APIRouter, status

from controller.api.auth import RequireToken
from controller.api.deps import Ctx
from controller.api.schemas import NetworkIn, NetworkOut

router = APIRouter(prefix="/networks", tags=["networks"], dependencies=[RequireToken])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a network")
def create_network(body: NetworkIn, ctx: Ctx) -> NetworkOut:
    network = ctx.inventory.create_network(body.name, body.subnet, body.gateway, body.mtu)
    return NetworkOut.of(network)


@router.get("", summary="List networks")
def list_networks(ctx: Ctx) -> list[NetworkOut]:
    return [NetworkOut.of(n) for n in ctx.inventory.networks()]


@router.get("/{name}", summary="Show one network")
def get_network(name: str, ctx: Ctx) -> NetworkOut:
    return NetworkOut.of(ctx.inventory.network(name))


@router.delete("/{name}", summary="Delete a network (409 while it has containers)")
def delete_network(name: str, ctx: Ctx) -> NetworkOut:
    return NetworkOut.of(ctx.inventory.delete_network(name))
