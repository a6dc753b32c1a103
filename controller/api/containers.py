"""/api/v1/containers: container endpoints (attach records) by name or id."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from controller.api.auth import RequireToken
from controller.api.deps import ApiContext, Ctx
from controller.api.schemas import EndpointIn, EndpointOut
from controller.models import Endpoint

router = APIRouter(prefix="/containers", tags=["containers"], dependencies=[RequireToken])


def _out(ctx: ApiContext, endpoint: Endpoint) -> EndpointOut:
    return EndpointOut.of(endpoint, ctx.inventory.network(endpoint.network))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Add a container endpoint")
def add_container(body: EndpointIn, ctx: Ctx) -> EndpointOut:
    endpoint = ctx.inventory.add_endpoint(body.name, body.network, body.host, body.ip, body.mac)
    return _out(ctx, endpoint)


@router.get("", summary="List container endpoints")
def list_containers(
    ctx: Ctx, host: str | None = Query(default=None, description="Only this host's")
) -> list[EndpointOut]:
    return [_out(ctx, e) for e in ctx.inventory.endpoints(host=host)]


@router.get("/{name_or_id}", summary="Show one container endpoint")
def get_container(name_or_id: str, ctx: Ctx) -> EndpointOut:
    return _out(ctx, ctx.inventory.endpoint(name_or_id))


@router.delete("/{name_or_id}", summary="Remove a container endpoint")
def remove_container(name_or_id: str, ctx: Ctx) -> EndpointOut:
    return _out(ctx, ctx.inventory.remove_endpoint(name_or_id))
