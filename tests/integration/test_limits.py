"""Limits of a real controller process (docs/security.md, "Limits"): an
unauthenticated 100 MB body is refused at once without the controller's memory
growing, while the API keeps answering; a second stream of a host closes the first,
whose agent says why and does not fight back at once.

For the API's limits the controller runs alone on loopback with a SQLite store in
the test's directory; the stream takeover runs on a testbed with real agents.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from testbed import Testbed
from testbed.procs import wait_until
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from controller.agents.messages import CLOSE_REPLACED
from hostnet.agent.stream import TAKEOVER_BACKOFF_MIN

BIN_DIR = Path(sys.executable).parent
MB = 1_000_000


@dataclass
class Controller:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    token: str

    def rss(self) -> int:
        """Resident set size in bytes (from /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    token = secrets.token_urlsafe(24)
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    api, of = free_port(), free_port()
    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN_DIR / "daolinet-controller"), "--store", f"sqlite:///{tmp_path / 'db'}",
         "--token-file", str(tmp_path / "token"), "--api", f"127.0.0.1:{api}",
         "--openflow", f"127.0.0.1:{of}"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    url = f"http://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "controller.log").read_text()
            assert time.monotonic() < deadline, "the controller did not start"
            time.sleep(0.1)
        yield Controller(proc, url, api, token)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def send_body(port: int, headers: str, total: int, chunked: bool = False) -> tuple[bytes, int]:
    """POST `total` bytes of JSON-ish body after `headers` (in chunked encoding if
    `chunked`), reading the answer as soon as one comes; (the answer's first bytes,
    how many body bytes were sent by then)."""
    data = b"[" * 65536
    piece = b"%x\r\n%s\r\n" % (len(data), data) if chunked else data
    sent, pending = 0, memoryview(piece)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /api/v1/networks HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        s.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                received = s.recv(65536)
                if not received:
                    break  # closed by the server
                answer += received
                continue
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            if sent >= total:
                time.sleep(0.01)
                continue
            try:
                pending = pending[s.send(pending):]
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed: what it said was read above
            if not pending:
                sent, pending = sent + len(data), memoryview(piece)
        return answer, sent


def test_an_unauthenticated_100mb_body_is_refused_at_once(controller: Controller) -> None:
    before = controller.rss()
    for headers, chunked in (
        (f"Content-Type: application/json\r\nContent-Length: {100 * MB}\r\n", False),
        ("Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", True),
    ):
        answer, sent = send_body(controller.port, headers, 100 * MB, chunked)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'"detail":"missing bearer token"' in answer
        assert sent < 100 * MB  # answered before the body was sent
    # with the admin token, a 100 MB Content-Length is refused by its length at once
    answer, sent = send_body(
        controller.port,
        f"Authorization: Bearer {controller.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * MB}\r\n", 100 * MB)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"limit of 1048576 bytes" in answer
    assert sent < 100 * MB
    grown = controller.rss() - before
    assert grown < 50 * MB, f"RSS grew by {grown / MB:.1f} MB"
    # the API still serves, legitimate bodies included
    auth = {"Authorization": f"Bearer {controller.token}"}
    r = httpx.post(f"{controller.url}/api/v1/networks", headers=auth,
                   json={"name": "web", "subnet": "10.1.0.0/24"}, timeout=10)
    assert r.status_code == 201, r.text


def test_a_chunked_body_past_the_cap_is_cut_with_413(controller: Controller) -> None:
    auth = {"Authorization": f"Bearer {controller.token}", "Content-Type": "application/json"}
    before = controller.rss()

    def body() -> Iterator[bytes]:
        yield b'{"name": "web", "subnet": "10.1.0.0/24", "pad": "'
        for _ in range(100):  # 100 MB, never all sent
            yield b"x" * MB
        yield b'"}'

    try:
        r = httpx.post(f"{controller.url}/api/v1/networks", headers=auth, content=body(),
                       timeout=30)
        assert r.status_code == 413, r.text
        assert "limit of 1048576 bytes" in r.json()["detail"]
    except httpx.WriteError:
        pass  # the server answered and closed while the client still wrote: refused too
    assert controller.rss() - before < 50 * MB
    r = httpx.get(f"{controller.url}/api/v1/networks", headers=auth, timeout=10)
    assert r.status_code == 200 and r.json() == []


def test_a_newer_stream_of_a_host_closes_the_older(testbed_factory: Any) -> None:
    """A second stream for h1 (here a client with the agents' token) replaces the real
    agent's, which is closed with a reason; the agent logs why and waits before it takes
    the stream back (closing ours the same way), then serves its host as before."""
    tb: Testbed = testbed_factory(hosts=2)
    h1, h2 = tb.hosts["h1"], tb.hosts["h2"]
    url = tb.api_url.replace("http://", "ws://") + "/api/v1/hosts/h1/stream"
    logged = h1.agent_log.stat().st_size
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {tb.token}"},
                    open_timeout=10) as newer:
        assert json.loads(newer.recv(timeout=10))["type"] == "snapshot"
        wait_until(lambda: "taken over" in h1.agent_log.read_text()[logged:], 10,
                   "the agent of h1 did not log that its stream was taken over")
        line = next(x for x in h1.agent_log.read_text()[logged:].splitlines()
                    if "taken over" in x)
        assert "WARNING" in line and "replaced by a newer stream of host h1 from" in line
        # no fight: ours stays for the agent's takeover backoff ...
        held_until = time.monotonic() + TAKEOVER_BACKOFF_MIN - 1.5
        while time.monotonic() < held_until:
            with contextlib.suppress(TimeoutError):
                newer.recv(timeout=max(0.01, held_until - time.monotonic()))
        # ... then the agent connects again, and the newer stream (its own) wins
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                newer.recv(timeout=15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_REPLACED
    assert f"replaced by a newer stream of host h1 from {h1.address}:" in closed.value.rcvd.reason
    assert "replaces the one from" in tb.replica_log(0).read_text()
    # the agent serves its host again: a new connection across the hosts is set up
    tb.create_network("web", "10.1.0.0/24")
    a, b = tb.container(h1, "a", "web"), tb.container(h2, "b", "web")
    assert wait_until(lambda: tb.ping(a, b), 10, "a cannot reach b after the takeover")
