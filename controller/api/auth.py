"""Bearer-token authentication of the API and the agent stream.

`require_token` works for HTTP routes and WebSocket routes alike (it takes the
connection, not a Request) and shows up as the `HTTPBearer` scheme in /docs.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi import Depends, HTTPException, WebSocketException, status
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from controller.api.deps import ApiContext

MISSING = "missing bearer token"
INVALID = "invalid token"


def token_matches(ctx: ApiContext, token: str) -> bool:
    """Constant-time comparison with the configured token (an empty one matches nothing)."""
    expected = ctx.token.encode()
    return bool(expected) and hmac.compare_digest(token.encode(), expected)


def parse_bearer(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer T` header value, or None."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def check_token(ctx: ApiContext, header_value: str | None) -> bool:
    """True if an `Authorization` header value carries the right bearer token."""
    token = parse_bearer(header_value)
    return token is not None and token_matches(ctx, token)


class BearerToken(HTTPBearer):
    """Checks the bearer token against `app.state.ctx.token`; HTTP or WebSocket."""

    def __init__(self) -> None:
        super().__init__(
            scheme_name="bearer",
            description="The controller's API token: `Authorization: Bearer <token>`.",
            auto_error=True,
        )

    async def __call__(self, conn: HTTPConnection) -> None:
        ctx: ApiContext = conn.app.state.ctx
        token = parse_bearer(conn.headers.get("authorization"))
        if token is None:
            self._deny(conn, MISSING)
        elif not token_matches(ctx, token):
            self._deny(conn, INVALID)

    @staticmethod
    def _deny(conn: HTTPConnection, detail: str) -> None:
        if conn.scope["type"] == "websocket":
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=detail)
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=detail,
            headers={"WWW-Authenticate": "Bearer"},
        )


bearer_token = BearerToken()

# Add to a router or route: `dependencies=[RequireToken]`.
RequireToken = Depends(bearer_token)
