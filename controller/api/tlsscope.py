"""The verified client certificate of an HTTPS or WSS connection, in the ASGI scope.

uvicorn does not put the peer certificate in the scope, and an ASGI app cannot
reach the transport.  So the server runs two small subclasses of uvicorn's protocol
classes (h11 for HTTP, the sans-I/O websockets implementation for WebSockets): when
a connection is made - after the TLS handshake, which verified the certificate
against the deployment's CA (controller/trust/tls.py, CERT_OPTIONAL) - each reads
the peer certificate once from the transport's `ssl_object` and wraps the app so
that every request of the connection carries it as the ASGI TLS extension
(`scope["extensions"]["tls"]["client_cert_chain"]`, PEM), which
controller/trust/identity.py `scope_identity` reads.  A WebSocket upgrade makes a
new WebSocket protocol object on the same transport: it reads the same certificate.

Nothing here trusts the scope's certificate by itself: only a certificate the TLS
layer verified reaches `getpeercert`, and a plain-HTTP connection carries none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from controller.trust.identity import peer_pem

App = Any  # an ASGI 3 application (uvicorn's own alias is private)


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection: its verified client certificate (an
    empty chain without one); None for a connection without TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    pem = peer_pem(ssl_object)
    return {
        "server_cert": None,
        "client_cert_chain": [pem] if pem else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


def with_tls_scope(app: App, extension: dict[str, Any] | None) -> App:
    """`app`, with `extension` added to every scope it is called with (`app` itself
    without TLS)."""
    if extension is None:
        return app

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = extension
        await app({**scope, "extensions": extensions}, receive, send)

    return wrapped


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, passing the peer certificate to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = with_tls_scope(self.app, tls_extension(transport))


class TlsWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, passing the peer certificate to the app."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.app = with_tls_scope(self.app, tls_extension(transport))
