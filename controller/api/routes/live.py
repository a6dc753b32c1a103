"""GET /routes: the live hot-plug connections, read from the runtime.

With masters spread over replicas each replica knows the connections through the
switches it masters: the answer merges every member's (`/replicas/routes`), one
row per pair, its flows counted over both halves.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

import httpx
from fastapi import APIRouter
from starlette.responses import JSONResponse

from controller.api.auth import RequireToken
from controller.api.deps import Ctx

router = APIRouter(dependencies=[RequireToken])
MEMBER_TIMEOUT = 3.0


@router.get("/routes", summary="Live hot-plug routes between containers", response_model=None)
async def list_routes(
    ctx: Ctx, host: str | None = None
) -> list[dict[str, Any]] | JSONResponse:
    rows = ctx.runtime.routes(host)
    urls = ctx.member_apis()
    if urls is None:
        return rows
    params = {"host": host} if host else {}
    headers = {"Authorization": f"Bearer {ctx.token}"}
    # our replica certificate: the members' replica endpoints require it under TLS
    verify: ssl.SSLContext | bool = (ctx.client_tls.refresh() if ctx.client_tls is not None
                                     else True)
    async with httpx.AsyncClient(timeout=MEMBER_TIMEOUT, verify=verify) as client:
        answers = await asyncio.gather(
            *(client.get(u.rstrip("/") + "/api/v1/replicas/routes", params=params,
                         headers=headers) for u in urls),
            return_exceptions=True,
        )
    parts = [rows]
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException) or answer.status_code != 200:
            why = answer if isinstance(answer, BaseException) else answer.status_code
            return JSONResponse(
                {"detail": f"replica {url} did not answer with its routes: {why}"},
                status_code=503, headers={"Retry-After": "1"},
            )
        parts.append(answer.json())
    return merge_routes(parts)


def merge_routes(parts: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per pair: flows added up, the oldest age, the latest activity."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for rows in parts:
        for row in rows:
            key = (str(row["src_ip"]), str(row["dst_ip"]))
            have = seen.get(key)
            if have is None:
                seen[key] = dict(row)
                continue
            have["flows"] = int(have["flows"]) + int(row["flows"])
            have["age"] = max(float(have["age"]), float(row["age"]))
            have["idle"] = min(float(have["idle"]), float(row["idle"]))
    return sorted(seen.values(), key=lambda r: (str(r["src"]), str(r["dst"])))
