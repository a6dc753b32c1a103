"""Who calls the API and the agent stream, and what each caller may do.

A caller is one of (docs/security.md, "Identity per host", "Endpoints and tokens"):

* an operator, by bearer token: admin (`--token-file`, everything) or read-only
  (`--readonly-token-file`, reads only);
* a host, by its certificate (`OU=host`, `CN=<host>`, verified by the TLS layer:
  controller/api/tlsscope.py): reads, and acts for its own host only - registers it,
  opens its own stream, adds, renames, relocates and removes its own containers,
  rotates its own WireGuard key.  The routes check the host a request acts for
  (`act_for`);
* a replica, by its certificate (`OU=controller`): everything the admin token may,
  and the replica endpoints (`RequireReplica`);
* without TLS only (development, `--insecure-plaintext`), the shared agent token
  (`--agent-token-file`): reads, plus what any host's agent does, for any host.
  Under TLS it may only read: a host's certificate is its credential.

A certificate of a host or a replica names the caller, whatever token comes with it;
a revoked one is refused (controller/trust/revocation.py).  Every refusal says why:
401 (no credential) or 403 with the reason, a WebSocket close with the reason.
"""

import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, HTTPException, WebSocketException, status
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from controller.api.deps import ApiContext, Ctx
from controller.trust.identity import CertRole, Identity, scope_identity

MISSING = "missing bearer token"
INVALID = "invalid token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.Enum):
    ADMIN = "admin"
    AGENT = "agent"
    READONLY = "read-only"
    HOST = "host"  # a host's certificate
    REPLICA = "replica"  # a replica's certificate


# The roles of a certificate; a certificate of another role (etcd, operator) names
# no API caller: its holder is asked for a token like a caller without one.
CERT_ROLES = {CertRole.HOST: Role.HOST, CertRole.CONTROLLER: Role.REPLICA}


class Refused(Exception):
    """A caller refused: 401 (no valid credential) or 403, and why."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a role, and for a certificate its holder."""

    role: Role
    identity: Identity | None = None

    @property
    def name(self) -> str | None:
        """The host's or replica's name (certificates); None for a token."""
        return self.identity.name if self.identity is not None else None

    def __str__(self) -> str:
        if self.identity is not None:
            return f"the certificate of {self.identity.role.value} {self.identity.name}"
        return f"the {self.role.value} token"


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


def caller_of(ctx: ApiContext, scope: Any) -> Caller:
    """The caller of an ASGI scope: its certificate's holder (a host or a replica),
    else its bearer token's role.  Refused: no credential, an invalid token, or a
    revoked certificate."""
    identity = scope_identity(scope)
    if identity is not None and identity.role in CERT_ROLES:
        revoked = revoked_since(ctx, scope)
        if revoked is not None:
            raise Refused(status.HTTP_403_FORBIDDEN, revoked)
        return Caller(CERT_ROLES[identity.role], identity)
    token = parse_bearer(Headers(scope=scope).get("authorization"))
    if token is None:
        raise Refused(status.HTTP_401_UNAUTHORIZED, MISSING)
    role = role_of(ctx, token)
    if role is None:
        raise Refused(status.HTTP_401_UNAUTHORIZED, INVALID)
    return Caller(role)


def unauthenticated(ctx: ApiContext, scope: Any) -> tuple[int, str] | None:
    """The status and why a request carries no valid credential (None: it carries
    one; the routes check what it may do): asked before a request body is read
    (controller/api/limits.py)."""
    try:
        caller_of(ctx, scope)
    except Refused as exc:
        return exc.code, exc.detail
    return None


def check_token(ctx: ApiContext, header_value: str | None) -> bool:
    """True if an `Authorization` header carries a token that may open an agent stream
    without TLS (the admin or the agent token)."""
    token = parse_bearer(header_value)
    return token is not None and role_of(ctx, token) in (Role.ADMIN, Role.AGENT)


Refusal = tuple[int, str]  # an HTTP status (401, 403) and why


def _websocket_refusal(ctx: ApiContext, scope: Any,
                       check: Callable[[Caller], Refusal | None]) -> Refusal | None:
    """Why a caller may not open a WebSocket (None: it may).  Without TLS the admin or
    the agent token may; under TLS the caller's credential, then `check`."""
    if not ctx.tls:
        if check_token(ctx, Headers(scope=scope).get("authorization")):
            return None
        return status.HTTP_401_UNAUTHORIZED, "invalid or missing bearer token"
    try:
        caller = caller_of(ctx, scope)
    except Refused as exc:
        return exc.code, exc.detail
    return check(caller)


def stream_refusal(ctx: ApiContext, scope: Any, host: str) -> Refusal | None:
    """Why a caller may not open `host`'s agent stream (None: it may).  Under TLS only
    that host's certificate may."""
    def check(caller: Caller) -> Refusal | None:
        if caller.role is not Role.HOST:
            return status.HTTP_403_FORBIDDEN, (
                f"{caller} may not open the stream of host {host}: it needs the "
                f"certificate of host {host} (OU=host, CN={host})")
        if caller.name != host:
            return status.HTTP_403_FORBIDDEN, (
                f"{caller} may not open the stream of host {host}, only its own")
        return None
    return _websocket_refusal(ctx, scope, check)


def replica_refusal(ctx: ApiContext, scope: Any, action: str) -> Refusal | None:
    """Why a caller may not use a replica endpoint (None: it may).  Under TLS only a
    replica's certificate may."""
    def check(caller: Caller) -> Refusal | None:
        if caller.role is not Role.REPLICA:
            return status.HTTP_403_FORBIDDEN, (
                f"{caller} may not use {action}: it needs a replica certificate "
                "(OU=controller)")
        return None
    return _websocket_refusal(ctx, scope, check)


def revoked_since(ctx: ApiContext, scope: Any) -> str | None:
    """Why the certificate of a connection's caller is refused now (revoked since it
    connected); None while it is not, or for a caller without a certificate."""
    identity = scope_identity(scope)
    revocations = ctx.revocations
    if identity is None or revocations is None:
        return None
    revocation = revocations.refused(identity)
    if revocation is None:
        return None
    why = f": {revocation.reason}" if revocation.reason else ""
    return (f"the certificate of {identity.role.value} {identity.name} is revoked "
            f"({revocation.key}{why})")


def close_reason(text: str) -> str:
    """`text` cut to what a WebSocket close frame carries (123 bytes of UTF-8)."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


async def refuse_websocket(websocket: WebSocket, refusal: tuple[int, str]) -> None:
    """Refuse a WebSocket naming why: accepted, then closed with 4401/4403 and the
    reason.  A close frame, not an HTTP answer before the handshake, because the
    agents and replicas read refusals of every kind (4503 too) from its code."""
    code, reason = refusal
    await websocket.accept()
    await websocket.close(code=4000 + code, reason=close_reason(reason))


def _deny(conn: HTTPConnection, code: int, detail: str) -> NoReturn:
    if conn.scope["type"] == "websocket":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION,
                                 reason=close_reason(detail))
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    raise HTTPException(status_code=code, detail=detail, headers=headers)


def request_caller(conn: HTTPConnection, ctx: ApiContext) -> Caller:
    """The caller of a request (kept on the request: asked once), or the refusal."""
    caller = getattr(conn.state, "caller", None)
    if isinstance(caller, Caller):
        return caller
    try:
        caller = caller_of(ctx, conn.scope)
    except Refused as exc:
        _deny(conn, exc.code, exc.detail)
    conn.state.caller = caller
    conn.state.role = caller.role
    return caller


class BearerToken(HTTPBearer):
    """Checks the caller of a request (certificate or bearer token); HTTP or WebSocket.

    Any caller may read (GET/HEAD/OPTIONS); other methods and WebSockets need a role
    in `writers` (the agent token only without TLS).  With `replica_only`, under TLS
    only a replica's certificate may call at all (the replica endpoints).
    """

    def __init__(self, writers: frozenset[Role], what: str, *,
                 replica_only: bool = False) -> None:
        super().__init__(
            scheme_name="bearer",
            description=(
                "An API token: `Authorization: Bearer <token>`. The admin token may "
                "do everything, the read-only token may only read. Hosts and replicas "
                "present their certificates instead (HTTPS; docs/security.md)."
            ),
            auto_error=True,
        )
        self.writers = writers
        self.what = what  # what the writers may change, for the 403 message
        self.replica_only = replica_only

    # No `from __future__ import annotations` in this module: FastAPI reads the
    # dependencies of a callable object from its real annotations (`ctx: Ctx`).
    async def __call__(self, conn: HTTPConnection, ctx: Ctx) -> None:  # type: ignore[override]
        caller = request_caller(conn, ctx)
        method = conn.scope.get("method", "WEBSOCKET")
        action = f"{method} {conn.url.path}"
        if self.replica_only and ctx.tls and caller.role is not Role.REPLICA:
            _deny(conn, status.HTTP_403_FORBIDDEN,
                  f"{caller} may not use {action}: it needs a replica certificate "
                  "(OU=controller)")
        if conn.scope["type"] == "http" and method in SAFE_METHODS:
            return
        if caller.role is Role.AGENT and ctx.tls:
            _deny(conn, status.HTTP_403_FORBIDDEN,
                  f"the agent token may not change anything under TLS ({action}): a "
                  "host acts with its certificate (OU=host, CN=<host>)")
        if caller.role not in self.writers:
            if caller.role is Role.READONLY:
                detail = f"the read-only token may not change anything ({action})"
            elif caller.role is Role.HOST:
                detail = (f"{caller} may not change {self.what} ({action}): "
                          "an operator does")
            else:
                detail = (
                    f"{caller} may not change {self.what} ({action}): use the admin token"
                )
            _deny(conn, status.HTTP_403_FORBIDDEN, detail)


def act_for(conn: HTTPConnection, ctx: ApiContext, host: str, what: str) -> None:
    """403 unless the caller may act for `host`: a host's certificate only for its
    own host (operators, replicas and the agent token for any)."""
    caller = request_caller(conn, ctx)
    if caller.role is Role.HOST and caller.name != host:
        _deny(conn, status.HTTP_403_FORBIDDEN,
              f"{caller} may not {what} of host {host}, only of its own")


def operator_only(conn: HTTPConnection, ctx: ApiContext, what: str) -> None:
    """403 for a host's certificate: `what` is an operator's action."""
    caller = request_caller(conn, ctx)
    if caller.role is Role.HOST:
        _deny(conn, status.HTTP_403_FORBIDDEN, f"{caller} may not {what}: an operator does")


def credential_under_tls(conn: HTTPConnection, ctx: Ctx) -> None:
    """Under TLS, any valid caller (a certificate of a host or a replica, or a token:
    the read-only one is enough): 401 without one, 403 when revoked.  Without TLS
    (`--insecure-plaintext`, development) nothing: what crosses in clear is no secret."""
    if ctx.tls:
        request_caller(conn, ctx)


def get_caller(conn: HTTPConnection, ctx: Ctx) -> Caller:
    return request_caller(conn, ctx)


bearer_token = BearerToken(frozenset({Role.ADMIN, Role.AGENT, Role.HOST, Role.REPLICA}),
                           "this")
admin_token = BearerToken(
    frozenset({Role.ADMIN, Role.REPLICA}), "networks, groups, policies or firewalls"
)
# Network delete: the Docker network driver of an agent with the agent token does it
# (development); a host's certificate may not (the network spans hosts).
network_writer = BearerToken(frozenset({Role.ADMIN, Role.AGENT, Role.REPLICA}), "networks")
# Network create: a host's certificate too, so that `docker network create -d daolinet`
# on a host works; not an external one (external access is policy: the route checks).
network_creator = BearerToken(frozenset({Role.ADMIN, Role.AGENT, Role.HOST, Role.REPLICA}),
                              "networks")
replica_token = BearerToken(frozenset({Role.ADMIN, Role.REPLICA}), "replicas",
                            replica_only=True)

# Add to a router or route: `dependencies=[RequireToken]` (admin, hosts for their
# own host, and the agent token may write; read-only may read) or
# `dependencies=[RequireAdmin]` (only admin and replicas write); the replica
# endpoints `RequireReplica` (under TLS: replica certificates only).
RequireToken = Depends(bearer_token)
RequireAdmin = Depends(admin_token)
RequireNetworkWriter = Depends(network_writer)
RequireNetworkCreator = Depends(network_creator)
RequireCredentialUnderTls = Depends(credential_under_tls)
RequireReplica = Depends(replica_token)
CallerDep = Annotated[Caller, Depends(get_caller)]
