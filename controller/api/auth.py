"""Bearer-token authentication and roles of the API and the agent stream.

Three tokens, three roles (docs/architecture.md, "Policy"):

* admin (`--token-file`): everything;
* agent (`--agent-token-file`): reads, plus what a host agent does: register its
  host, open its stream, add/change/remove container endpoints;
* read-only (`--readonly-token-file`): reads (GET/HEAD) only.

`RequireToken` (hosts, containers, routes, trace) lets admin and agent tokens
write; `RequireAdmin` (networks, groups, policies, firewalls) only the admin token.
A valid token without the right role gets 403 with a message saying why.  Both
work for HTTP routes and WebSocket routes alike and show up as the `HTTPBearer`
scheme in /docs.
"""

import enum
import hmac

from fastapi import Depends, HTTPException, WebSocketException, status
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from controller.api.deps import ApiContext, Ctx

MISSING = "missing bearer token"
INVALID = "invalid token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.Enum):
    ADMIN = "admin"
    AGENT = "agent"
    READONLY = "read-only"


def _same(token: str, expected: str) -> bool:
    """Constant-time comparison (an empty configured token matches nothing)."""
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def role_of(ctx: ApiContext, token: str) -> Role | None:
    """The role a token carries, or None if it is none of the configured tokens."""
    if _same(token, ctx.token):
        return Role.ADMIN
    if _same(token, ctx.agent_token):
        return Role.AGENT
    if _same(token, ctx.readonly_token):
        return Role.READONLY
    return None


def token_matches(ctx: ApiContext, token: str) -> bool:
    """True for the admin token."""
    return role_of(ctx, token) is Role.ADMIN


def parse_bearer(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer T` header value, or None."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def unauthenticated(ctx: ApiContext, headers: Headers) -> str | None:
    """Why the headers carry none of the configured tokens (None: they carry one; the
    routes check its role): asked before a request body is read (controller/api/limits.py)."""
    token = parse_bearer(headers.get("authorization"))
    if token is None:
        return MISSING
    return INVALID if role_of(ctx, token) is None else None


def check_token(ctx: ApiContext, header_value: str | None) -> bool:
    """True if an `Authorization` header carries a token that may open an agent stream
    (the admin or the agent token)."""
    token = parse_bearer(header_value)
    return token is not None and role_of(ctx, token) in (Role.ADMIN, Role.AGENT)


class BearerToken(HTTPBearer):
    """Checks the bearer token against the context's tokens; HTTP or WebSocket.

    Any valid token may read (GET/HEAD/OPTIONS); other methods and WebSockets need
    a role in `writers`.
    """

    def __init__(self, writers: frozenset[Role], what: str) -> None:
        super().__init__(
            scheme_name="bearer",
            description=(
                "An API token: `Authorization: Bearer <token>`. The admin token may "
                "do everything, the agent token may also register hosts and change "
                "containers, the read-only token may only read."
            ),
            auto_error=True,
        )
        self.writers = writers
        self.what = what  # what the writers may change, for the 403 message

    # No `from __future__ import annotations` in this module: FastAPI reads the
    # dependencies of a callable object from its real annotations (`ctx: Ctx`).
    async def __call__(self, conn: HTTPConnection, ctx: Ctx) -> None:  # type: ignore[override]
        token = parse_bearer(conn.headers.get("authorization"))
        if token is None:
            self._deny(conn, status.HTTP_401_UNAUTHORIZED, MISSING)
            return
        role = role_of(ctx, token)
        if role is None:
            self._deny(conn, status.HTTP_401_UNAUTHORIZED, INVALID)
            return
        conn.state.role = role
        method = conn.scope.get("method", "WEBSOCKET")
        if conn.scope["type"] == "http" and method in SAFE_METHODS:
            return
        if role not in self.writers:
            action = f"{method} {conn.url.path}"
            if role is Role.READONLY:
                detail = f"the read-only token may not change anything ({action})"
            else:
                detail = (
                    f"the {role.value} token may not change {self.what} ({action}): "
                    "use the admin token"
                )
            self._deny(conn, status.HTTP_403_FORBIDDEN, detail)

    @staticmethod
    def _deny(conn: HTTPConnection, code: int, detail: str) -> None:
        if conn.scope["type"] == "websocket":
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=detail)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        raise HTTPException(status_code=code, detail=detail, headers=headers)


bearer_token = BearerToken(frozenset({Role.ADMIN, Role.AGENT}), "this")
admin_token = BearerToken(
    frozenset({Role.ADMIN}), "networks, groups, policies or firewalls"
)

# Add to a router or route: `dependencies=[RequireToken]` (admin and agent may
# write, read-only may read) or `dependencies=[RequireAdmin]` (only admin writes).
RequireToken = Depends(bearer_token)
RequireAdmin = Depends(admin_token)
