"""/api/v1/revocations: revoke a host's certificates or one certificate serial, and
list the revocations (docs/security.md, "Revocation").

Written to the store (controller/trust/revocation.py): this replica refuses the
credential at once, the others within their watch's delay; open agent streams and
switch connections of a revoked certificate are closed.  A revocation is never
lifted: a new certificate (a new key) is issued instead.  Operators only: the admin
token or a replica's certificate writes, the read-only token reads.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.api.auth import RequireAdmin, operator_only
from controller.api.deps import ApiContext, Ctx
from controller.desired.models import Name
from controller.trust.revocation import MAX_REASON, Revocation, Revocations, parse_serial

router = APIRouter(prefix="/revocations", tags=["revocations"], dependencies=[RequireAdmin])


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


@router.get("", summary="List the revoked certificates and hosts")
def list_revocations(ctx: Ctx, request: Request) -> list[RevocationOut]:
    operator_only(request, ctx, "read the revocations")
    return [RevocationOut.of(r) for r in _revocations(ctx).list()]


@router.post("", status_code=status.HTTP_201_CREATED,
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
