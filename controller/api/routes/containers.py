"""/api/v1/containers: container endpoints (attach records) by name, id or Docker id."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status

from controller.agents.hub import CommandError
from controller.api.auth import RequireToken
from controller.api.deps import ApiContext, Ctx, HubDep
from controller.api.schemas import EndpointIn, EndpointOut, EndpointPatch, HostTarget
from controller.desired.models import Endpoint

log = logging.getLogger(__name__)
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


@router.patch("/{name_or_id}", summary="Rename an endpoint or record its Docker id")
def update_container(name_or_id: str, body: EndpointPatch, ctx: Ctx) -> EndpointOut:
    endpoint = ctx.inventory.update_endpoint(name_or_id, name=body.name, docker_id=body.docker_id)
    return _out(ctx, endpoint)


@router.post(
    "/{name_or_id}/relocate",
    summary="Record that an endpoint now lives on another host (used by the agents)",
)
def relocate_container(name_or_id: str, body: HostTarget, ctx: Ctx) -> EndpointOut:
    return _out(ctx, ctx.inventory.relocate_endpoint(name_or_id, body.host))


@router.post(
    "/{name_or_id}/move",
    summary="Re-create a Docker container on another host, keeping its IP and MAC",
)
async def move_container(
    name_or_id: str, body: HostTarget, ctx: Ctx, hub: HubDep
) -> EndpointOut:
    """Inspect on the old host, run on the new one (the endpoint is relocated when
    the new container joins), then remove the old container."""
    endpoint = ctx.inventory.endpoint(name_or_id)
    ctx.inventory.host(body.host)
    if endpoint.docker_id is None:
        raise HTTPException(409, f"container {endpoint.name} was not started by Docker")
    if endpoint.host == body.host:
        raise HTTPException(409, f"container {endpoint.name} is already on host {body.host}")
    if hub is None:
        raise HTTPException(503, "no agent hub")
    source = endpoint.host
    try:
        spec = await hub.command(source, "docker-inspect", {"docker_id": endpoint.docker_id})
        args: dict[str, Any] = {
            "spec": spec, "endpoint": endpoint.id, "ip": str(endpoint.ip), "mac": endpoint.mac,
        }
        await hub.command(body.host, "docker-run", args, timeout=120)
    except CommandError as exc:
        current = ctx.inventory.index.endpoint(endpoint.id)
        if current is not None and current.host != source:
            ctx.inventory.relocate_endpoint(endpoint.id, source)
        raise HTTPException(409, f"move of {endpoint.name} to {body.host} failed: {exc}") from None
    try:
        await hub.command(source, "docker-remove", {"docker_id": endpoint.docker_id})
    except CommandError as exc:
        log.error("move of %s: old container not removed on %s: %s", endpoint.name, source, exc)
    return _out(ctx, ctx.inventory.endpoint(endpoint.id))


@router.delete("/{name_or_id}", summary="Remove a container endpoint")
def remove_container(name_or_id: str, ctx: Ctx) -> EndpointOut:
    return _out(ctx, ctx.inventory.remove_endpoint(name_or_id))
