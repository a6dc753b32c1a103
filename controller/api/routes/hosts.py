"""/api/v1/hosts: host registration (by the agents), listing and removal (admin);
/api/v1/revocations: revoking a host's certificates or one certificate serial, and
listing them (docs/security.md, "Revocation").

A revocation is written to the store (controller/trust/revocation.py): this
replica refuses the credential at once, the others within their watch's delay;
open agent streams and switch connections of a revoked certificate are closed.
It is never lifted: a new certificate (a new key) is issued instead.  Operators
only: the admin token or a replica's certificate writes, the read-only token reads.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.agents.hub import CommandError
from controller.api.auth import (
    RequireAdmin,
    RequireToken,
    Role,
    act_for,
    operator_only,
    request_caller,
)
from controller.api.deps import ApiContext, Ctx, HubDep
from controller.api.schemas import HostIn, HostOut, HostRemovedOut
from controller.desired.models import Host, Name
from controller.trust.revocation import MAX_REASON, Revocation, Revocations, parse_serial

log = logging.getLogger(__name__)

router = APIRouter(prefix="/hosts", tags=["hosts"], dependencies=[RequireToken])

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def openflow_host(ctx: ApiContext, request: Request) -> str:
    """The address an agent should give OVS to reach the OpenFlow endpoint.

    The configured listen address, unless it is a wildcard: then the address the
    client used to reach the API (its Host header).  If that is a DNS name, the
    local address of the connection is preferred, since OVS does not always
    resolve names.
    """
    if ctx.openflow_host not in WILDCARDS:
        return ctx.openflow_host
    hostname = request.url.hostname or ""
    if _is_ip(hostname):
        return hostname
    server = request.scope.get("server")
    if server and isinstance(server[0], str) and _is_ip(server[0]):
        address = ipaddress.ip_address(server[0])
        if not address.is_unspecified:
            return server[0]
    return hostname or "127.0.0.1"


def openflow_targets(ctx: ApiContext, request: Request, site: str) -> list[str]:
    """The controller targets of a switch of `site`."""
    if ctx.openflow_targets is not None:
        targets = ctx.openflow_targets(site)
        if targets:
            return targets  # every replica (per site): each switch connects to all of them
    host = openflow_host(ctx, request)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # OVS syntax for IPv6 targets
    return [f"{ctx.openflow_scheme}:{host}:{ctx.openflow_port}"]


def _out(ctx: ApiContext, request: Request, host: Host) -> HostOut:
    return HostOut.of(host, openflow_targets(ctx, request, host.site))


@router.post("", summary="Register (or re-register) a host")
def register_host(body: HostIn, ctx: Ctx, request: Request) -> HostOut:
    act_for(request, ctx, body.name, "register the record")
    host = ctx.inventory.register_host(
        body.name, body.address, body.site, wg_public_key=body.wg_public_key,
        wg_endpoint=body.wg_endpoint, tunnel_address=body.tunnel_address, relay=body.relay,
    )
    return _out(ctx, request, host)


@router.get("", summary="List hosts")
def list_hosts(ctx: Ctx, request: Request) -> list[HostOut]:
    return [_out(ctx, request, h) for h in ctx.inventory.hosts()]


@router.get("/{name}", summary="Show one host")
def get_host(name: str, ctx: Ctx, request: Request) -> HostOut:
    return _out(ctx, request, ctx.inventory.host(name))


@router.delete("/{name}", summary="Remove a host (409 while it has containers, unless force)")
def remove_host(name: str, ctx: Ctx, request: Request, force: bool = False) -> HostRemovedOut:
    """Everything of the host goes, in one change: its record and (with
    `?force=true`) its containers' endpoints; every other host drops its WireGuard
    peer, the core forgets its switch and the routes to it, its agent's stream is
    closed.  Only the admin token: an agent token acts for its own host's
    registration, not for taking hosts out of the network."""
    caller = request_caller(request, ctx)
    if caller.role is not Role.ADMIN:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{caller} may not remove a host (DELETE {request.url.path}): "
            "use the admin token",
        )
    host, endpoints = ctx.inventory.remove_host(name, force=force)
    if endpoints:
        log.warning("host %s removed with its %d container(s): %s", name, len(endpoints),
                    ", ".join(e.name for e in endpoints))
    else:
        log.info("host %s removed", name)
    out = _out(ctx, request, host)
    return HostRemovedOut(**out.model_dump(), removed_containers=[e.name for e in endpoints])


@router.post("/{name}/rotate-key", summary="Replace a host's WireGuard key pair")
async def rotate_key(name: str, ctx: Ctx, hub: HubDep, request: Request) -> HostOut:
    """The host's agent generates a new key pair (the private key stays on the host),
    the controller publishes the public key to every peer, and the host switches to
    it half a second later: live connections pause briefly, none is reset."""
    act_for(request, ctx, name, "rotate the WireGuard key")
    host = ctx.inventory.host(name)
    if host.wg_public_key is None:
        raise HTTPException(409, f"host {name} has no WireGuard interface")
    if hub is None:
        raise HTTPException(503, "no agent hub")
    try:
        new = await hub.command(name, "wg-keygen", {}, timeout=15)
    except CommandError as exc:
        raise HTTPException(409, str(exc)) from exc
    key = str(new.get("public_key", ""))
    try:
        await hub.command(name, "wg-commit", {}, timeout=15)
    except CommandError as exc:
        # The agent schedules the switch before it answers: a lost answer most
        # likely means it switches anyway, so the peers must learn the new key.
        log.warning("wg-commit of %s: %s; publishing the new key anyway", name, exc)
    return _out(ctx, request, ctx.inventory.set_host_key(name, key))


# --- revocations -------------------------------------------------------------------
revocations_router = APIRouter(prefix="/revocations", tags=["revocations"],
                               dependencies=[RequireAdmin])


class RevocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    host: Name | None = Field(default=None, description="Revoke every certificate of this "
                              "host issued until now")
    serial: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Revoke this one certificate (hex, colons allowed)",
        examples=["3a:5f:09"])
    reason: Annotated[str, Field(max_length=MAX_REASON)] = ""

    @model_validator(mode="after")
    def _one(self) -> RevocationIn:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host or serial")
        return self


class RevocationOut(BaseModel):
    key: str
    at: float
    reason: str
    host: str | None = None
    serial: str | None = None

    @classmethod
    def of(cls, revocation: Revocation) -> RevocationOut:
        return cls(key=revocation.key, at=revocation.at, reason=revocation.reason,
                   host=revocation.host,
                   serial=f"{revocation.serial:x}" if revocation.serial is not None else None)


def _revocations(ctx: ApiContext) -> Revocations:
    if ctx.revocations is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "this controller runs without TLS (--insecure-plaintext): no caller presents "
            "a certificate, so there is none to revoke")
    return ctx.revocations


@revocations_router.get("", summary="List the revoked certificates and hosts")
def list_revocations(ctx: Ctx, request: Request) -> list[RevocationOut]:
    operator_only(request, ctx, "read the revocations")
    return [RevocationOut.of(r) for r in _revocations(ctx).list()]


@revocations_router.post("", status_code=status.HTTP_201_CREATED,
                         summary="Revoke a host's certificates or one certificate")
def revoke(body: RevocationIn, ctx: Ctx) -> RevocationOut:
    revocations = _revocations(ctx)
    kwargs: dict[str, Any] = {"reason": body.reason}
    if body.serial is not None:
        try:
            kwargs["serial"] = parse_serial(body.serial)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    else:
        kwargs["host"] = body.host
    return RevocationOut.of(revocations.revoke(**kwargs))
