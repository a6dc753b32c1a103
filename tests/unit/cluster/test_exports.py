"""controller/cluster/exports.py against a replica's needs endpoint on loopback: the
answer is what the setup hears; a replica that changes masters (409) is asked again;
a receiver's "not held in time" answer arrives as such, not as a timed-out read."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.cluster import exports
from controller.cluster.exports import NEEDS_PATH, Exporter
from controller.datapath.needs import NeedsExport

Answer = tuple[int, dict[str, Any], float]  # status, body, delay before answering


@contextmanager
def receiver(answers: list[Answer]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A needs endpoint giving `answers` in turn (the last one again and again)."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert self.path == NEEDS_PATH
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body, delay = answers[min(len(bodies), len(answers)) - 1]
            time.sleep(delay)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


class FakeCore:
    def exports_acked(self, *_: Any) -> None:
        raise AssertionError("called through handle_timed only")


class FakeRuntime:
    """What the exporter uses of the runtime: where the host's master is, and the
    core handler its answers go to."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.core = FakeCore()
        self.acks: list[tuple[str, int, bool]] = []
        self.acked = threading.Event()

    def owner_api(self, host: str) -> str | None:
        return self.url

    def handle_timed(self, handler: Callable[..., Any], host: str, token: int,
                     ok: bool) -> None:
        assert handler == self.core.exports_acked
        self.acks.append((host, token, ok))
        self.acked.set()


def export(token: int = 7) -> NeedsExport:
    return NeedsExport(host="h1", generation=3, token=token, needs={2: {}}, adds=True)


def run_export(answers: list[Answer]) -> tuple[FakeRuntime, list[dict[str, Any]], Exporter]:
    with receiver(answers) as (url, bodies):
        runtime = FakeRuntime(url)
        exporter = Exporter(runtime, "replica-token")  # type: ignore[arg-type]
        exporter.send("c1", export())
        assert runtime.acked.wait(10), "the export was never answered"
    return runtime, bodies, exporter


def test_an_accepted_export_is_acked_ok() -> None:
    runtime, bodies, exporter = run_export([(200, {"ok": True}, 0.0)])
    assert runtime.acks == [("h1", 7, True)]
    assert bodies == [{"sender": "c1", "host": "h1", "generation": 3, "token": 7,
                       "needs": {"2": {}}}]
    assert (exporter.sent, exporter.failed) == (1, 0)


def test_a_replica_changing_masters_is_asked_again() -> None:
    runtime, bodies, _ = run_export([(409, {"detail": "not yet"}, 0.0),
                                     (200, {"ok": True}, 0.0)])
    assert runtime.acks == [("h1", 7, True)]
    assert len(bodies) == 2


def test_a_late_refusal_is_heard_as_such(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """The receiver waits up to EXPORT_TIMEOUT for the host's agent, then answers
    ok=false: the sender hears that answer (it waits ANSWER_MARGIN longer)."""
    monkeypatch.setattr(exports, "EXPORT_TIMEOUT", 0.3)
    caplog.set_level(logging.WARNING, logger="controller.cluster.exports")
    runtime, _, exporter = run_export([(200, {"ok": False}, 0.35)])
    assert runtime.acks == [("h1", 7, False)]
    assert exporter.failed == 1
    assert "did not have the host's agent hold it within 0.3s" in caplog.text
    assert "timed out" not in caplog.text
