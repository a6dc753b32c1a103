"""The agent's /metrics server (docs/operations.md, "Metrics"): prometheus_client's
WSGI app on a threading HTTP server of the standard library.

Plain HTTP on a loopback address only, for a scraper on this host, and only without
the host's TLS files.  With them (and always past the loopback interface, which the
configuration enforces: hostnet/agent/config.py) it serves TLS with this host's
certificate and requires a client certificate of the deployment's CA.  The TLS
handshake runs in the connection's own thread, never in the accepting one, and each
connection has a deadline, so a silent client holds one thread for a while, not the
server.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

from controller.trust.tls import ServerContext, TlsFiles

log = logging.getLogger(__name__)

CONNECTION_TIMEOUT = 10.0  # seconds a connection may take (handshake, request)


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class _Server(WSGIServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], tls: ServerContext | None) -> None:
        self.address_family = (socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.tls = tls
        super().__init__(address, _QuietHandler)

    def server_bind(self) -> None:
        """As HTTPServer's, without its reverse lookup of the address (a resolver
        that does not answer would hold the agent's startup)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Each connection in a thread of its own (the TLS handshake included)."""
        threading.Thread(target=self._serve_one, args=(request, client_address),
                         daemon=True, name="metrics-conn").start()

    def _serve_one(self, request: socket.socket, client_address: Any) -> None:
        conn: socket.socket = request
        try:
            conn.settimeout(CONNECTION_TIMEOUT)
            if self.tls is not None:
                conn = self.tls.context.wrap_socket(request, server_side=True)
            self.finish_request(conn, client_address)
        except (OSError, ssl.SSLError) as exc:
            log.debug("metrics: connection from %s dropped: %s", client_address, exc)
        finally:
            self.shutdown_request(conn)


class MetricsServer:
    """Serves `registry` at http(s)://ADDRESS:PORT/metrics in a thread of its own.
    `tls`: this host's files (the CA verifies the scrapers' certificates)."""

    def __init__(self, registry: CollectorRegistry, address: str, port: int,
                 tls: TlsFiles | None = None) -> None:
        self.registry = registry
        self.address = address
        self.port = port
        self.tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and serve; the port bound (the one given, or the kernel's for 0).
        OSError when the address cannot be bound, ValueError for TLS files that do
        not load."""
        context = ServerContext(self.tls, require_client=True) if self.tls else None
        server = _Server((self.address, self.port), context)
        server.set_app(make_wsgi_app(self.registry))
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        name="metrics")
        self._thread.start()
        return int(server.server_address[1])

    def close(self) -> None:
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None
