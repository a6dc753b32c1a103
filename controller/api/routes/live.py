"""What the switches carry and carried: GET /routes, the live hot-plug connections
read from the runtime, and GET /connections, the connection log (every decision,
revocation and expiry; controller/api/connections.py).

With masters spread over replicas each replica knows the connections through the
switches it masters: the answers merge every member's (`/replicas/routes`, one row
per pair, its flows counted over both halves; `/replicas/connections`, by time).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query
from starlette.responses import JSONResponse

from controller.api.auth import RequireToken
from controller.api.connections import ConnectionQuery, local_page, merge_pages
from controller.api.deps import ApiContext, Ctx

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
    answers = await _ask_members(ctx, urls, "/api/v1/replicas/routes", params)
    parts = [rows]
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException) or answer.status_code != 200:
            return _member_failed(url, answer, "its routes")
        parts.append(answer.json())
    return merge_routes(parts)


@router.get("/connections", summary="The connection log: decisions, revocations, expiries",
            response_model=None)
async def list_connections(
    ctx: Ctx, q: Annotated[ConnectionQuery, Query()]
) -> dict[str, Any] | JSONResponse:
    replica = str(ctx.replica["name"]) if ctx.replica else ""
    mine = local_page(ctx.connlog, q, replica)
    urls = ctx.member_apis()
    if not urls:
        return mine
    answers = await _ask_members(ctx, urls, "/api/v1/replicas/connections", q.params())
    parts = [mine]
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException) or answer.status_code != 200:
            return _member_failed(url, answer, "its connection log")
        parts.append(answer.json())
    return merge_pages(parts, q)


async def _ask_members(
    ctx: ApiContext, urls: list[str], path: str, params: dict[str, str]
) -> list[httpx.Response | BaseException]:
    headers = {"Authorization": f"Bearer {ctx.token}"}
    # our replica certificate: the members' replica endpoints require it under TLS
    verify: ssl.SSLContext | bool = (ctx.client_tls.refresh() if ctx.client_tls is not None
                                     else True)
    async with httpx.AsyncClient(timeout=MEMBER_TIMEOUT, verify=verify) as client:
        return await asyncio.gather(
            *(client.get(u.rstrip("/") + path, params=params, headers=headers) for u in urls),
            return_exceptions=True,
        )


def _member_failed(url: str, answer: httpx.Response | BaseException, what: str) -> JSONResponse:
    why = answer if isinstance(answer, BaseException) else answer.status_code
    return JSONResponse(
        {"detail": f"replica {url} did not answer with {what}: {why}"},
        status_code=503, headers={"Retry-After": "1"},
    )


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
