"""The FastAPI application of the controller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial

from fastapi import APIRouter, FastAPI

from controller.api.auth import unauthenticated
from controller.api.deps import ApiApp, ApiContext
from controller.api.errors import install_error_handlers
from controller.api.limits import BodyLimits, LimitBodies
from controller.api.routes import (
    containers,
    firewalls,
    groups,
    hosts,
    networks,
    policies,
    replicas,
    trace,
)

API_PREFIX = "/api/v1"


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    ctx: ApiContext,
    extra_routers: Sequence[APIRouter] = (),
    lifespan: Lifespan | None = None,
    body_limits: BodyLimits | None = None,
) -> ApiApp:
    """The API app: hosts, networks, containers, groups, policies, firewalls, trace and
    replicas plus `extra_routers`, under /api/v1.

    The own routers require the bearer token.  Extra routers (the live routes, the
    agent stream WebSocket) bring their own check: `dependencies=[RequireToken]`
    for HTTP, `check_token()` for a WebSocket that wants its own close codes.
    """
    app = ApiApp(
        ctx,
        title="daolinet",
        summary="Policy API of the daolinet SDN controller",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # before any route: no body is read without a credential, none past its cap
    app.add_middleware(LimitBodies, limits=body_limits or BodyLimits(),
                       unauthenticated=partial(unauthenticated, ctx))

    @app.get("/healthz", tags=["health"], summary="Liveness (no auth)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    own = (
        hosts.router,
        networks.router,
        containers.router,
        groups.router,
        policies.router,
        firewalls.router,
        trace.router,
        replicas.router,
        hosts.revocations_router,
    )
    for router in own:
        app.include_router(router, prefix=API_PREFIX)
    for router in extra_routers:
        app.include_router(router, prefix=API_PREFIX)
    return app
