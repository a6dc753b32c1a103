"""GET /routes: the live hot-plug connections, read from the fabric."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.api.auth import RequireToken
from controller.api.deps import Ctx

router = APIRouter(dependencies=[RequireToken])


@router.get("/routes", summary="Live hot-plug routes between containers")
def list_routes(ctx: Ctx, host: str | None = None) -> list[dict[str, Any]]:
    return ctx.fabric.routes(host)
