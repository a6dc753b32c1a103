"""The live map's routes: the page (`/map`, static, no data: served without a
credential) and its API under /api/v1/map (a credential required, the read-only
token is enough; docs/security.md, "The live map").

* GET /api/v1/map/view: the bounded picture (controller/livemap/view.py);
* GET /api/v1/map/events: the same picture, then its changes, as server-sent
  events (controller/livemap/feed.py); at most `max_streams` at once per replica;
  a stream ends when its caller's certificate is revoked;
* GET /api/v1/map/containers/{name}: a container's network, groups, pair
  policies, firewall rules, published ports and recent connections.

`site` and `host` (repeated, at most MAX_EXPAND together) say what the operator
opened; `auto=false` keeps a small deployment closed too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import Field
from starlette.responses import JSONResponse

from controller.api.auth import RequireToken, revoked_since
from controller.api.connections import ConnectionQuery
from controller.api.deps import ApiContext, Ctx
from controller.api.routes import live
from controller.connlog.log import MAX_PAGE
from controller.livemap.details import container_details
from controller.livemap.feed import REFRESH, Feed, sse
from controller.livemap.members import MemberLogs
from controller.livemap.view import DENY_WINDOW, MAX_EXPAND, Expansion, build_view

MAX_STREAMS = 16  # event streams one replica serves at once (each rebuilds its picture)
RECENT = 20  # connections shown for a clicked container
# masters spread: what the other replicas' logs do not show (a container removed
# there), at least this often
SPREAD_REFRESH = 2.0

Name = Annotated[str, Field(min_length=1, max_length=253)]
Names = Annotated[list[Name], Query(max_length=MAX_EXPAND)]

# The page's files (controller/livemap/static), by the name the page asks for.
ASSETS = {"map.js": "text/javascript", "map.css": "text/css"}
# The page loads its own script and style only, and talks to its own origin only:
# an injected script could read the token kept in sessionStorage.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("controller.livemap").joinpath("static", name).read_bytes()


class LiveMap:
    """The map's routers and its count of open streams."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self.streams = 0
        self.page_router = self._page_router()
        self.api_router = self._api_router()

    def _page_router(self) -> APIRouter:
        router = APIRouter(tags=["map"])
        page = {name: _asset(name) for name in [*ASSETS, "index.html"]}

        @router.get("/map", summary="The live map (a page; its data needs a credential)",
                    response_class=Response)
        def map_page() -> Response:
            return Response(page["index.html"], media_type="text/html",
                            headers=PAGE_HEADERS)

        @router.get("/map/{asset}", summary="A file of the live map's page",
                    response_class=Response)
        def map_asset(asset: str) -> Response:
            if asset not in ASSETS:
                raise HTTPException(404, f"path asset: no file {asset[:64]} in the map")
            return Response(page[asset], media_type=ASSETS[asset], headers=PAGE_HEADERS)

        return router

    def _api_router(self) -> APIRouter:
        router = APIRouter(prefix="/map", tags=["map"], dependencies=[RequireToken])

        @router.get("/view", summary="The map's picture: sites, hosts, containers, edges")
        async def map_view(ctx: Ctx, site: Names = [], host: Names = [],  # noqa: B006
                           auto: bool = True) -> dict[str, Any]:
            return await picture(ctx, _expansion(site, host, auto))

        @router.get("/events", summary="The map's picture and its changes (server-sent events)",
                    response_class=StreamingResponse)
        async def map_events(request: Request, ctx: Ctx, site: Names = [],  # noqa: B006
                             host: Names = [], auto: bool = True  # noqa: B006
                             ) -> StreamingResponse:
            if self.streams >= self.max_streams:
                raise HTTPException(
                    503, f"map streams: {self.max_streams} open on this replica already",
                    headers={"Retry-After": "5"})
            expansion = _expansion(site, host, auto)
            feed = Feed(
                lambda: picture(ctx, expansion), ctx.inventory.index.view, ctx.connlog,
                _replica(ctx), refresh=SPREAD_REFRESH if ctx.member_apis() else REFRESH,
                refused=lambda: revoked_since(ctx, request.scope), members=_members(ctx))
            return StreamingResponse(
                self._counted(feed.events()), media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

        @router.get("/containers/{name}", summary="A container on the map: its policy and "
                    "recent connections")
        async def map_container(
                ctx: Ctx, name: Annotated[str, Path(min_length=1, max_length=253)]
        ) -> dict[str, Any]:
            out = container_details(ctx.inventory.index.view(), name)
            out["connections"] = await _recent(ctx, name)
            return out

        return router

    async def _counted(self, events: AsyncIterator[str]) -> AsyncIterator[str]:
        """`events`, counted as one open stream from its first chunk until the browser
        goes (a stream that never started holds no count).  Two browsers let in at
        once past the check above: the later one ends at once, saying why."""
        if self.streams >= self.max_streams:
            yield sse("refused", {"detail": f"map streams: {self.max_streams} open on "
                                            "this replica already"})
            return
        self.streams += 1
        try:
            async for chunk in events:
                yield chunk
        finally:
            self.streams -= 1


def _expansion(sites: list[str], hosts: list[str], auto: bool) -> Expansion:
    if len(sites) + len(hosts) > MAX_EXPAND:
        raise HTTPException(
            422, f"query parameters site and host: at most {MAX_EXPAND} together "
                 f"(got {len(sites) + len(hosts)})")
    return Expansion(frozenset(sites), frozenset(hosts), auto)


def _members(ctx: ApiContext) -> MemberLogs:
    """The other replicas' logs, followed with this replica's credentials (the admin
    token; under TLS its replica certificate), as GET /connections asks them."""
    return MemberLogs(
        ctx.member_apis, ctx.token,
        lambda: ctx.client_tls.refresh() if ctx.client_tls is not None else True)


def _replica(ctx: ApiContext) -> str:
    return str(ctx.replica["name"]) if ctx.replica else ""


async def picture(ctx: ApiContext, expansion: Expansion) -> dict[str, Any]:
    """The picture now: every replica's live routes (GET /routes' answer) and the
    denials of the last DENY_WINDOW seconds (GET /connections').  A replica that
    does not answer leaves its part out, said in `partial`."""
    now = time.time()
    partial: list[str] = []
    routes = await live.list_routes(ctx, None)
    if isinstance(routes, JSONResponse):
        partial.append(f"live routes: {bytes(routes.body).decode()}")
        routes = ctx.runtime.routes()
    denials: list[dict[str, Any]] = []
    if ctx.connlog is not None:
        # a flood's entry counts on after its time: DENY_WINDOW after its last packet
        since = datetime.fromtimestamp(now - DENY_WINDOW - ctx.connlog.interval, tz=UTC)
        page = await live.list_connections(
            ctx, ConnectionQuery.model_validate(
                {"verdict": "deny", "since": since, "limit": MAX_PAGE}))
        if isinstance(page, JSONResponse):
            partial.append(f"denials: {bytes(page.body).decode()}")
        else:
            denials = page["entries"]
    # a large deployment's picture takes a while (docs/performance.md, "Live map"):
    # off the event loop, so the API answers meanwhile
    view = await asyncio.to_thread(
        build_view, ctx.inventory.index.view(), routes, denials, expansion, now)
    view["partial"] = partial
    return view


async def _recent(ctx: ApiContext, name: str) -> list[dict[str, Any]] | None:
    """The container's newest RECENT log entries (None: the log is off)."""
    if ctx.connlog is None:
        return None
    page = await live.list_connections(
        ctx, ConnectionQuery.model_validate({"container": name, "limit": RECENT}))
    if isinstance(page, JSONResponse):
        return None
    entries: list[dict[str, Any]] = page["entries"]
    return entries
