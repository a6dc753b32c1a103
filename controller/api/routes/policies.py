"""/api/v1/policies: pair policies (`connect`/`disconnect` two containers)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from controller.api.auth import RequireAdmin
from controller.api.deps import Ctx
from controller.api.schemas import AuditPatch, PairPolicyIn, PairPolicyOut

router = APIRouter(prefix="/policies", tags=["policies"], dependencies=[RequireAdmin])


@router.get("", summary="List pair policies")
def list_policies(
    ctx: Ctx,
    container: str | None = Query(default=None, description="Only this container's"),
) -> list[PairPolicyOut]:
    return [PairPolicyOut.of(p) for p in ctx.inventory.pair_policies(container)]


@router.get("/{a}/{b}", summary="Show the pair policy between two containers")
def get_policy(a: str, b: str, ctx: Ctx) -> PairPolicyOut:
    return PairPolicyOut.of(ctx.inventory.pair_policy(a, b))


@router.put(
    "/{a}/{b}",
    summary="Allow (connect) or deny (disconnect) traffic between two containers",
)
def set_policy(a: str, b: str, body: PairPolicyIn, ctx: Ctx) -> PairPolicyOut:
    return PairPolicyOut.of(ctx.inventory.set_pair_policy(a, b, body.action, body.audit))


@router.patch(
    "/{a}/{b}",
    summary="Put a pair policy in audit mode, or enforce it ({\"audit\": false})",
)
def patch_policy(a: str, b: str, body: AuditPatch, ctx: Ctx) -> PairPolicyOut:
    return PairPolicyOut.of(ctx.inventory.set_pair_policy_audit(a, b, body.audit))


@router.delete("/{a}/{b}", summary="Clear the pair policy between two containers")
def clear_policy(a: str, b: str, ctx: Ctx) -> PairPolicyOut:
    return PairPolicyOut.of(ctx.inventory.clear_pair_policy(a, b))
