"""The agent's local API, served over its unix socket (see docs/architecture.md)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hostnet.host.attach import Attacher, AttachError, AttachRequest, DetachRequest


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    msg = str(first.get("msg", "invalid value"))
    return f"{loc}: {msg}" if loc else msg


def create_app(attacher: Attacher) -> FastAPI:
    app = FastAPI(title="daolinet host agent", docs_url=None, redoc_url=None)

    @app.exception_handler(AttachError)
    async def _attach_error(_: Request, exc: AttachError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "host": attacher.host}

    @app.post("/v1/attach")
    async def attach(req: AttachRequest) -> dict[str, Any]:
        return await attacher.attach(req)

    @app.post("/v1/detach")
    async def detach(req: DetachRequest) -> dict[str, Any]:
        return await attacher.detach(req.name)

    return app
