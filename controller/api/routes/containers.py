"""/api/v1/containers: container endpoints (attach records) by name, id or Docker id."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from controller.agents.hub import CommandError
from controller.api.auth import RequireToken, Role, act_for, operator_only, request_caller
from controller.api.deps import ApiContext, Ctx, HubDep
from controller.api.schemas import (
    ContainerPortIn,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    HostTarget,
    PublishedPortOut,
)
from controller.desired.errors import NotFound
from controller.desired.models import Endpoint, PublishedPort

log = logging.getLogger(__name__)
router = APIRouter(prefix="/containers", tags=["containers"], dependencies=[RequireToken])

# A move an operator started (kept in the store, so that the replica the destination
# agent reaches knows it): the destination host may relocate the endpoint to itself.
MOVES = "moves"
MOVE_TIMEOUT = 180.0  # seconds a started move lets its destination relocate


def _relocation_allowed(ctx: ApiContext, endpoint: Endpoint, host: str) -> bool:
    """Whether a host may relocate `endpoint` to `host` (itself): its own endpoint,
    or one an operator's move sends to it."""
    if endpoint.host == host:
        return True
    move = ctx.inventory.store.get(MOVES, endpoint.id)
    return (move is not None and move.get("to") == host
            and time.time() - float(move.get("at", 0)) < MOVE_TIMEOUT)


def _out(ctx: ApiContext, endpoint: Endpoint) -> EndpointOut:
    return EndpointOut.of(endpoint, ctx.inventory.network(endpoint.network))


@router.post("", status_code=status.HTTP_201_CREATED, summary="Add a container endpoint")
def add_container(body: EndpointIn, ctx: Ctx, request: Request) -> EndpointOut:
    act_for(request, ctx, body.host, "add a container")
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


@router.patch(
    "/{name_or_id}", summary="Rename an endpoint, record its Docker id, aliases and hostname"
)
def update_container(
    name_or_id: str, body: EndpointPatch, ctx: Ctx, request: Request
) -> EndpointOut:
    current = ctx.inventory.endpoint(name_or_id)
    act_for(request, ctx, current.host, f"change container {current.name}")
    endpoint = ctx.inventory.update_endpoint(
        name_or_id, name=body.name, docker_id=body.docker_id, aliases=body.aliases,
        hostname=body.hostname,
    )
    return _out(ctx, endpoint)


@router.post(
    "/{name_or_id}/relocate",
    summary="Record that an endpoint now lives on another host (used by the agents)",
)
def relocate_container(
    name_or_id: str, body: HostTarget, ctx: Ctx, request: Request
) -> EndpointOut:
    caller = request_caller(request, ctx)
    if caller.role is Role.HOST:
        endpoint = ctx.inventory.endpoint(name_or_id)
        act_for(request, ctx, body.host, f"relocate container {endpoint.name} to a host")
        if not _relocation_allowed(ctx, endpoint, body.host):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{caller} may not relocate container {endpoint.name} of host "
                f"{endpoint.host}: only its own, or one an operator moves to it")
    return _out(ctx, ctx.inventory.relocate_endpoint(name_or_id, body.host))


@router.post(
    "/{name_or_id}/move",
    summary="Re-create a Docker container on another host, keeping its IP and MAC",
)
async def move_container(
    name_or_id: str, body: HostTarget, ctx: Ctx, hub: HubDep, request: Request
) -> EndpointOut:
    """Inspect on the old host, run on the new one (the endpoint is relocated when
    the new container joins), then remove the old container.  An operator's action:
    it makes another host run a container."""
    operator_only(request, ctx, "start a container move")
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
        ctx.inventory.store.put(MOVES, endpoint.id, {"to": body.host, "at": time.time()})
        try:
            await hub.command(body.host, "docker-run", args, timeout=120)
        finally:
            ctx.inventory.store.delete(MOVES, endpoint.id)
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


# --- a container's published ports (what the Docker plugin does for `docker run -p`) ---
def _port_out(ctx: ApiContext, port: PublishedPort) -> PublishedPortOut:
    endpoint = ctx.inventory.index.endpoint(port.container)
    return PublishedPortOut.of(port, endpoint.host if endpoint is not None else None)


@router.get("/{name_or_id}/ports", summary="A container's published ports")
def list_container_ports(name_or_id: str, ctx: Ctx) -> list[PublishedPortOut]:
    endpoint = ctx.inventory.endpoint(name_or_id)
    return [_port_out(ctx, p) for p in ctx.inventory.published_ports(endpoint.name)]


@router.post(
    "/{name_or_id}/ports",
    status_code=status.HTTP_201_CREATED,
    summary="Publish host_port[/protocol] of the container's host as a port of it",
)
def publish_container_port(
    name_or_id: str, body: ContainerPortIn, ctx: Ctx, request: Request
) -> PublishedPortOut:
    """The same as `POST /firewalls/ports`, for one container: a host's certificate
    may, for its own containers only (without TLS the agent token, for any); whether a
    client reaches the port is still up to the firewall rules of its network."""
    endpoint = ctx.inventory.endpoint(name_or_id)
    act_for(request, ctx, endpoint.host, f"publish a port of container {endpoint.name}")
    port = ctx.inventory.publish_port(
        endpoint.id, body.host_port, body.container_port, body.protocol
    )
    return _port_out(ctx, port)


@router.delete("/{name_or_id}/ports/{port_id}", summary="Unpublish a port of the container")
def unpublish_container_port(
    name_or_id: str, port_id: str, ctx: Ctx, request: Request
) -> PublishedPortOut:
    endpoint = ctx.inventory.endpoint(name_or_id)
    act_for(request, ctx, endpoint.host, f"unpublish a port of container {endpoint.name}")
    port = ctx.inventory.published_port(port_id)
    if port.container != endpoint.name:
        raise NotFound(f"published port {port_id} is not one of container {endpoint.name}")
    return _port_out(ctx, ctx.inventory.unpublish_port(port_id))


@router.delete("/{name_or_id}", summary="Remove a container endpoint")
def remove_container(name_or_id: str, ctx: Ctx, request: Request) -> EndpointOut:
    endpoint = ctx.inventory.endpoint(name_or_id)
    act_for(request, ctx, endpoint.host, f"remove container {endpoint.name}")
    return _out(ctx, ctx.inventory.remove_endpoint(name_or_id))
