"""Error responses: always `{"detail": "message"}` with a 4xx status."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.desired.errors import InventoryError
from controller.store.base import StoreUnavailable


class ErrorResponse(JSONResponse):
    """JSON with non-ASCII escaped: a message quoting a client's lone surrogate
    (JSON may carry one) must not turn a 4xx into a 500 at encoding time."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


_WHERE = {"query": "query parameter", "path": "path parameter", "header": "header"}


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return "request"
    where, rest = parts[0], parts[1:]
    if where == "body":
        return ".".join(rest) if rest else "body"
    if where in _WHERE and rest:
        return f"{_WHERE[where]} {'.'.join(rest)}"
    return ".".join(parts)


def validation_message(errors: Sequence[Any]) -> str:
    """One line naming every offending field, e.g. `subnet: Field required`."""
    lines = []
    for err in errors:
        loc = err.get("loc", ())
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid":
            lines.append(f"request body is not valid JSON: {err.get('ctx', {}).get('error', msg)}")
            continue
        if err.get("type") == "missing" and tuple(loc) == ("body",):
            lines.append("request body is required")
            continue
        lines.append(f"{_field(loc)}: {msg}")
    return "; ".join(lines) or "invalid request"


async def _inventory_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InventoryError)
    return ErrorResponse(status_code=exc.status_code, content={"detail": exc.message})


async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """No quorum, no member reachable: nothing was changed; the client may retry."""
    return ErrorResponse(
        status_code=503, content={"detail": f"store unavailable: {exc}"},
        headers={"Retry-After": "1"},
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers: Mapping[str, str] | None = getattr(exc, "headers", None)
    return ErrorResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=headers
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
    return ErrorResponse(
        status_code=status,
        content={"detail": validation_message(errors), "errors": jsonable_encoder(errors)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InventoryError, _inventory_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
