"""The real HTTPS server (controller/main.py `api_config`, controller/api/tlsscope.py)
on loopback: the verified client certificate reaches the routes, over HTTP and over
a WebSocket upgrade; a certificate of another CA fails the handshake; plain HTTP
gets no answer."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from controller.api.app import create_app
from controller.api.routes import stream
from controller.main import GRACEFUL_SHUTDOWN, api_config
from controller.trust.tls import ServerContext, TlsFiles
from tests.pki import TestCA
from tests.unit.api.support import make_ctx
from tests.unit.apiserver import serve

ADMIN = "admin-token"


@pytest.fixture
def pki(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def server(tmp_path: Path, pki: TestCA) -> Iterator[str]:
    ctx = make_ctx(tmp_path / "db", [])
    ctx.token, ctx.tls = ADMIN, True
    ctx.inventory.register_host("h1", "198.18.0.1")
    ctx.inventory.register_host("h2", "198.18.0.2")
    own = pki.issue("c1", "controller", ips=["127.0.0.1"])
    with serve(ctx, [stream.router],
               tls=ServerContext(TlsFiles(pki.cert_file, own.cert_file, own.key_file))) as url:
        yield url
    ctx.inventory.store.close()


def client_context(ca: TestCA, name: str | None = None, role: str = "host") -> ssl.SSLContext:
    """Trusts `ca`; with `name`, presents a certificate of `ca` for it."""
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    if name is not None:
        own = ca.issue(name, role, file_stem=f"client-{name}")
        context.load_cert_chain(own.cert_file, own.key_file)
    return context


def test_the_host_certificate_reaches_the_routes(server: str, pki: TestCA) -> None:
    with httpx.Client(base_url=server, verify=client_context(pki, "h1")) as h1:
        assert h1.post("/api/v1/hosts", json={"name": "h1",
                                              "address": "198.18.0.1"}).status_code == 200
        r = h1.post("/api/v1/hosts", json={"name": "h2", "address": "198.18.0.2"})
        assert r.status_code == 403
        assert r.json()["detail"].startswith("the certificate of host h1 may not register")


def test_without_a_certificate_the_token_is_asked(server: str, pki: TestCA) -> None:
    with httpx.Client(base_url=server, verify=client_context(pki)) as anon:
        assert anon.get("/api/v1/hosts").status_code == 401
        assert anon.get("/api/v1/hosts", headers={"Authorization": f"Bearer {ADMIN}"}
                        ).status_code == 200


def test_a_certificate_of_another_ca_fails_the_handshake(server: str, pki: TestCA,
                                                         tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other")
    context = client_context(pki)
    own = other.issue("h1", "host")
    context.load_cert_chain(own.cert_file, own.key_file)
    with httpx.Client(base_url=server, verify=context) as forged, \
            pytest.raises(httpx.HTTPError):
        forged.get("/api/v1/hosts").raise_for_status()


def test_plain_http_on_the_tls_port_gets_no_answer(server: str) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.replace("https://", "http://") + "/healthz", timeout=5)


def test_the_stream_upgrade_carries_the_certificate(server: str, pki: TestCA) -> None:
    url = server.replace("https://", "wss://") + "/api/v1/hosts/h2/stream"
    with connect(url, ssl=client_context(pki, "h1"), open_timeout=5) as ws, \
            pytest.raises(ConnectionClosedError) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == stream.CLOSE_FORBIDDEN
    assert closed.value.rcvd.reason == (
        "the certificate of host h1 may not open the stream of host h2, only its own")


def test_a_stopping_server_does_not_wait_for_an_idle_tls_connection(
    tmp_path: Path, pki: TestCA,
) -> None:
    """An idle keep-alive HTTPS connection whose client never sends TLS close_notify
    (Python's clients do not) held a stopping replica for asyncio's 30 s before its
    switches were handed over; the stop now waits GRACEFUL_SHUTDOWN at most."""
    ctx = make_ctx(tmp_path / "db", [])
    ctx.token, ctx.tls = ADMIN, True
    own = pki.issue("c1", "controller", ips=["127.0.0.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = api_config(create_app(ctx, [stream.router]), "127.0.0.1", port, "warning",
                        ServerContext(TlsFiles(pki.cert_file, own.cert_file, own.key_file)))
    config.lifespan = "off"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    idle = None
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        raw = socket.create_connection(("127.0.0.1", port))
        idle = client_context(pki, "h1").wrap_socket(raw, server_hostname="127.0.0.1")
        idle.sendall(b"GET /api/v1/networks HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")  # answered, kept alive
        stopping = time.monotonic()
        server.should_exit = True
        thread.join(timeout=25)
        took = time.monotonic() - stopping
        assert not thread.is_alive(), "the server still waits for the idle connection"
        assert took < GRACEFUL_SHUTDOWN + 5, f"the stop took {took:.1f}s"
    finally:
        server.should_exit = True
        if idle is not None:
            idle.close()
        listener.close()
        ctx.inventory.store.close()
