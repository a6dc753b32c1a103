"""Request-body limits at the edge of the API, before any route runs
(docs/security.md, "Limits").

A pure ASGI middleware, so nothing is read that it did not allow:

* a request that carries a body (a `Content-Length` above 0, or a
  `Transfer-Encoding`) needs a valid credential first: without one it gets the 401
  the route would give, at once, and its body is never read (the connection is
  closed, so a client cannot keep streaming into it);
* a `Content-Length` above the route's cap gets 413 at once;
* a body without a length (chunked) is counted while it is read: past the cap the
  route's answer is replaced by 413 (FastAPI turns the failed read into a 400 of its
  own; the client sees only the 413).

Every refusal names the limit and the option that sets it.  The caps are per route
(`BodyLimits.routes`, e.g. the bulk route needs of replicas); every other request
has the default cap.  Requests without a body (GET, WebSockets) pass untouched: the
routes' own checks answer them as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.errors import ErrorResponse

MIB = 1024 * 1024
DEFAULT_MAX_BODY = 1 * MIB  # --api-max-body
DEFAULT_MAX_BULK_BODY = 16 * MIB  # --api-max-bulk-body
# Routes whose bodies may be bulk (a replica's route needs of many switches).
BULK_ROUTES = (("POST", "/api/v1/replicas/needs"),)


@dataclass(frozen=True)
class BodyLimits:
    """The byte caps of request bodies: `default`, or the route's in `routes`
    (keyed by method and path) with the option that sets it."""

    default: int = DEFAULT_MAX_BODY
    routes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    default_option: str = "--api-max-body"
    route_option: str = "--api-max-bulk-body"

    @classmethod
    def of(cls, max_body: int, max_bulk_body: int) -> BodyLimits:
        """The caps of the controller's options (controller/settings.py)."""
        return cls(max_body, {route: max_bulk_body for route in BULK_ROUTES})

    def cap(self, method: str, path: str) -> tuple[int, str]:
        """The cap of a request and the option that sets it."""
        cap = self.routes.get((method, path))
        if cap is not None:
            return cap, self.route_option
        return self.default, self.default_option


class BodyTooLarge(Exception):
    """Raised to the route reading a body past its cap (never reaches a client)."""


# scope -> the status and why it carries no valid credential (401, or 403 for a
# revoked certificate), None if it carries one (controller/api/auth.py)
Unauthenticated = Callable[[Scope], tuple[int, str] | None]


class LimitBodies:
    """The ASGI middleware; `unauthenticated` says why a request carries no
    valid credential, None if they carry one (any role: the routes check the role)."""

    def __init__(
        self, app: ASGIApp, *, limits: BodyLimits, unauthenticated: Unauthenticated
    ) -> None:
        self.app = app
        self.limits = limits
        self.unauthenticated = unauthenticated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = _content_length(headers)
        if not length and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body to guard
            return
        refusal = self.unauthenticated(scope)
        if refusal is not None:
            code, detail = refusal
            await _refuse(scope, receive, send, code, detail,
                          {"WWW-Authenticate": "Bearer"} if code == 401 else None)
            return
        method, path = scope["method"], scope["path"]
        cap, option = self.limits.cap(method, path)
        too_large = (f"request body larger than the limit of {cap} bytes for "
                     f"{method} {path} (controller option {option})")
        if length is not None and length > cap:
            await _refuse(scope, receive, send, 413, too_large)
            return
        await _Counted(self.app, cap, too_large)(scope, receive, send)


class _Counted:
    """One request whose body is counted while the route reads it."""

    def __init__(self, app: ASGIApp, cap: int, too_large: str) -> None:
        self.app = app
        self.cap = cap
        self.too_large = too_large
        self.read = 0
        self.exceeded = False
        self.started = False  # a response started (ours or the route's)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
                if self.read > self.cap:
                    self.exceeded = True
                    raise BodyTooLarge(self.too_large)
            return message

        async def guarded_send(message: Message) -> None:
            if self.exceeded:
                # the route's answer to the failed read (FastAPI: a 400): ours instead
                if message["type"] == "http.response.start" and not self.started:
                    await self._send_413(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):  # our 413 follows
            await self.app(scope, counted_receive, guarded_send)
        if self.exceeded and not self.started:
            await self._send_413(scope, receive, send)

    async def _send_413(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started = True
        await _refuse(scope, receive, send, 413, self.too_large)


def _content_length(headers: Headers) -> int | None:
    """The declared body length (None: not declared, or not a number: the server's
    parser refuses the latter before we see it)."""
    value = headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer `{"detail": ...}` and close the connection: the unread rest of the body
    is never read (the server drops it with the connection)."""
    response = ErrorResponse(
        status_code=status, content={"detail": detail},
        headers={**(headers or {}), "Connection": "close"},
    )
    await response(scope, receive, send)
