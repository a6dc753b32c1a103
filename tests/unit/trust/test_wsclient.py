"""controller/trust/wsclient.py on loopback: a `wss:` opening that the server leaves
unanswered fails within its bound (websockets' own client waits for as long as the
server keeps silent, once a TLS 1.3 session ticket has arrived), and an opened
connection waits for its messages as long as they take."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection, serve

from controller.trust.tls import TlsFiles, build_server_context
from controller.trust.wsclient import connect
from tests.pki import TestCA

OPEN_TIMEOUT = 0.5


@pytest.fixture
def pki(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def server_context(pki: TestCA, *, tickets: bool) -> ssl.SSLContext:
    own = pki.issue("c1", "controller", ips=["127.0.0.1"])
    context = build_server_context(TlsFiles(pki.cert_file, own.cert_file, own.key_file))
    if tickets:
        context.num_tickets = 2  # what a server with default settings sends
    return context


@contextmanager
def silent_tls_server(context: ssl.SSLContext) -> Iterator[int]:
    """A server that completes the TLS handshake and then never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
                held.append(context.wrap_socket(conn, server_side=True))
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("tickets", [True, False], ids=["session-tickets", "no-tickets"])
def test_an_unanswered_opening_fails_within_its_bound(pki: TestCA, tickets: bool) -> None:
    client = ssl.create_default_context(cafile=str(pki.cert_file))
    failures: list[BaseException] = []

    def opening(port: int) -> None:
        try:
            connect(f"wss://127.0.0.1:{port}/", ssl=client, open_timeout=OPEN_TIMEOUT)
        except BaseException as exc:  # what the opening raised: checked below
            failures.append(exc)

    with silent_tls_server(server_context(pki, tickets=tickets)) as port:
        # In a thread: without the bound the opening never returns.
        thread = threading.Thread(target=opening, args=(port,), daemon=True)
        thread.start()
        thread.join(4 * OPEN_TIMEOUT)
        assert not thread.is_alive(), f"the opening still waits after {4 * OPEN_TIMEOUT}s"
    assert len(failures) == 1 and isinstance(failures[0], TimeoutError), failures
    assert "handshake response" in str(failures[0])


def test_an_open_connection_waits_longer_than_the_opening_bound(pki: TestCA) -> None:
    """The reads' timeout ends with the opening: a message that comes three opening
    bounds later arrives."""
    def handler(ws: ServerConnection) -> None:
        time.sleep(3 * OPEN_TIMEOUT)
        ws.send("late")

    client = ssl.create_default_context(cafile=str(pki.cert_file))
    with serve(handler, "127.0.0.1", 0, ssl=server_context(pki, tickets=True)) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        with connect(f"wss://127.0.0.1:{port}/", ssl=client,
                     open_timeout=OPEN_TIMEOUT) as ws:
            assert ws.recv(timeout=10 * OPEN_TIMEOUT) == "late"
        server.shutdown()
