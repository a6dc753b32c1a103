"""The agent's controller client after its certificate was renewed (a rotation after
a revocation, roles/pki): its next request presents the new certificate even though
the pool held a keep-alive connection made with the old one, which the controller
keeps refusing (the Molecule revocation scenario's agent stayed refused that way)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.trust.identity import identity_of_pem, peer_pem
from controller.trust.tls import ClientContext, ServerContext, TlsFiles
from hostnet.agent.client import ControllerClient
from tests.pki import TestCA


@pytest.fixture
def keepalive_server(tmp_path: Path) -> Iterator[tuple[TestCA, str, list[tuple[int, str]]]]:
    """An HTTPS server with keep-alive that answers every GET with [] and records
    (connection, peer CN) per request."""
    ca = TestCA(tmp_path)
    ctl = ca.issue("c1", "controller", ips=["127.0.0.1"])
    tls = ServerContext(TlsFiles(ca.cert_file, ctl.cert_file, ctl.key_file))
    seen: list[tuple[int, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_GET(self) -> None:
            assert isinstance(self.connection, ssl.SSLSocket)
            pem = peer_pem(self.connection)
            ident = identity_of_pem(pem) if pem else None
            seen.append((id(self.connection), ident.name if ident else "-"))
            body = json.dumps([]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ca, f"https://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_renewed_certificate_is_presented_on_a_new_connection(
    keepalive_server: tuple[TestCA, str, list[tuple[int, str]]],
) -> None:
    ca, url, seen = keepalive_server
    host = ca.issue("h1", "host", file_stem="host")
    tls = ClientContext(ca.cert_file, TlsFiles(ca.cert_file, host.cert_file, host.key_file))

    async def go() -> None:
        client = ControllerClient(url, None, tls=tls)
        try:
            await client.list_containers("h1")
            await client.list_containers("h1")  # the same pooled connection
            ca.renew("h1-renewed", "host", "host")
            await client.list_containers("h1")
        finally:
            await client.aclose()

    asyncio.run(go())
    assert [cn for _, cn in seen] == ["h1", "h1", "h1-renewed"]
    assert seen[0][0] == seen[1][0], "the first two requests shared a connection"
    assert tls.reloads == 1
