"""An identity per host on a real controller process over HTTPS (docs/security.md,
"Identity per host", "TLS per channel", "Revocation").

`daolinet-controller` runs on loopback with --tls-* (its replica certificate of a
test CA) and a SQLite store; clients present real certificates of that CA.  Each
attack is shown refused with the reason named, and the same credential still does
what it is for: host h1's certificate registers h1, opens h1's stream and changes
h1's containers, but not h2's; it reads, but changes no network; the agent token
only reads; the operator's token works; plain HTTP gets nothing; a revoked host is
refused and its open stream closed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from testbed.procs import free_ports, stop_process
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from tests.pki import TestCA

BIN_DIR = Path(sys.executable).parent
CLOSE_FORBIDDEN = 4403  # controller/api/routes/stream.py


@dataclass
class Controller:
    url: str
    token: str
    agent_token: str
    ca: TestCA
    log: Path

    def context(self, name: str | None = None, role: str = "host") -> ssl.SSLContext:
        """Trusts the test CA; with `name`, presents a certificate issued now for it."""
        context = ssl.create_default_context(cafile=str(self.ca.cert_file))
        if name is not None:
            own = self.ca.issue(name, role, file_stem=f"{role}-{name}-{secrets.token_hex(3)}")
            context.load_cert_chain(own.cert_file, own.key_file)
        return context

    def client(self, name: str | None = None, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", verify=self.context(name),
                            headers={"Authorization": f"Bearer {token}"} if token else None,
                            timeout=10)

    def stream(self, host: str, context: ssl.SSLContext) -> Any:
        url = self.url.replace("https://", "wss://") + f"/api/v1/hosts/{host}/stream"
        return ws_connect(url, ssl=context, open_timeout=10, close_timeout=2)

    def stream_refusal(self, host: str, context: ssl.SSLContext) -> tuple[int, str]:
        """The close code and reason of a refused stream (a refusal is a close frame
        after the handshake); fails if the stream is served."""
        with self.stream(host, context) as ws, pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    workdir = tmp_path_factory.mktemp("identity")
    ca = TestCA(workdir / "pki")
    own = ca.issue("c0", "controller", ips=["127.0.0.1"])
    token, agent_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    for name, value in (("token", token), ("agent-token", agent_token)):
        (workdir / name).write_text(value + "\n")
        (workdir / name).chmod(0o600)
    api, of = free_ports(2)
    log_path = workdir / "controller.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN_DIR / "daolinet-controller"), "--store", f"sqlite:///{workdir / 'db'}",
             "--token-file", str(workdir / "token"),
             "--agent-token-file", str(workdir / "agent-token"),
             "--api", f"127.0.0.1:{api}", "--openflow", f"127.0.0.1:{of}",
             "--tls-ca", str(ca.cert_file), "--tls-cert", str(own.cert_file),
             "--tls-key", str(own.key_file)],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    c = Controller(f"https://127.0.0.1:{api}", token, agent_token, ca, log_path)
    try:
        deadline = time.monotonic() + 30
        verify = c.context()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{c.url}/healthz", timeout=1, verify=verify).status_code == 200:
                    break
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the controller did not start"
            time.sleep(0.1)
        with c.client(token=token) as admin:
            for name, last in (("h1", 1), ("h2", 2)):
                r = admin.post("/hosts", json={"name": name, "address": f"198.18.0.{last}"})
                assert r.status_code == 200, r.text
            assert admin.post("/networks", json={"name": "web", "subnet": "10.1.0.0/24"}
                              ).status_code == 201
            for name, host in (("w1", "h1"), ("w2", "h2")):
                assert admin.post("/containers", json={"name": name, "network": "web",
                                                       "host": host}).status_code == 201
        yield c
    finally:
        stop_process(proc)


def detail(r: httpx.Response) -> str:
    return str(r.json()["detail"])


def test_plain_http_on_the_tls_port_gets_no_answer(controller: Controller) -> None:
    plain = controller.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/api/v1/hosts", timeout=5,
                  headers={"Authorization": f"Bearer {controller.token}"})


def test_a_certificate_of_another_ca_is_refused_at_the_handshake(
    controller: Controller, tmp_path: Path
) -> None:
    other = TestCA(tmp_path / "other")
    forged = other.issue("h2", "host")
    context = controller.context()
    context.load_cert_chain(forged.cert_file, forged.key_file)
    with httpx.Client(verify=context, timeout=5) as client, pytest.raises(httpx.HTTPError):
        client.get(controller.url + "/api/v1/hosts")


def test_a_host_registers_itself_and_not_another(controller: Controller) -> None:
    with controller.client("h1") as h1:
        r = h1.post("/hosts", json={"name": "h1", "address": "198.18.0.1"})
        assert r.status_code == 200, r.text
        r = h1.post("/hosts", json={"name": "h2", "address": "198.18.0.99", "relay": True})
        assert r.status_code == 403
        assert detail(r) == ("the certificate of host h1 may not register the record of "
                             "host h2, only of its own")
    with controller.client(token=controller.token) as admin:
        assert admin.get("/hosts/h2").json()["address"] == "198.18.0.2"


def test_a_host_changes_its_own_containers_only(controller: Controller) -> None:
    with controller.client("h1") as h1:
        r = h1.patch("/containers/w2", json={"name": "stolen"})
        assert r.status_code == 403 and "change container w2 of host h2" in detail(r)
        r = h1.delete("/containers/w2")
        assert r.status_code == 403
        r = h1.post("/containers/w2/relocate", json={"host": "h1"})
        assert r.status_code == 403 and "may not relocate container w2" in detail(r)
        r = h1.post("/containers/w2/move", json={"host": "h1"})
        assert r.status_code == 403 and "may not start a container move" in detail(r)
        r = h1.post("/containers", json={"name": "x1", "network": "web", "host": "h1"})
        assert r.status_code == 201, r.text
        assert h1.delete("/containers/x1").status_code == 200


def test_a_host_creates_a_network_but_deletes_none(controller: Controller) -> None:
    """`docker network create -d daolinet` on a host creates the network with the
    host's certificate; deleting one (it spans hosts) stays an operator's."""
    with controller.client("h1") as h1:
        assert [n["name"] for n in h1.get("/networks").json()] == ["web"]
        r = h1.post("/networks", json={"name": "evil", "subnet": "10.9.0.0/24",
                                       "external": True})
        assert r.status_code == 403
        assert detail(r).startswith("the certificate of host h1 may not create an external")
        r = h1.post("/networks", json={"name": "db", "subnet": "10.9.0.0/24"})
        assert r.status_code == 201, r.text
        r = h1.delete("/networks/db")
        assert r.status_code == 403
        assert detail(r).startswith("the certificate of host h1 may not change networks")
    with controller.client(token=controller.token) as admin:
        assert admin.delete("/networks/db").status_code == 200


def test_the_agent_token_only_reads_under_tls(controller: Controller) -> None:
    with controller.client(token=controller.agent_token) as agent:
        assert agent.get("/hosts").status_code == 200
        r = agent.post("/hosts", json={"name": "h2", "address": "198.18.0.99"})
        assert r.status_code == 403
        assert "the agent token may not change anything under TLS" in detail(r)


def test_the_operator_token_works(controller: Controller) -> None:
    with controller.client(token=controller.token) as admin:
        r = admin.post("/networks", json={"name": "ops", "subnet": "10.8.0.0/24"})
        assert r.status_code == 201, r.text
        assert admin.delete("/networks/ops").status_code == 200


def test_replica_endpoints_need_a_replica_certificate(controller: Controller) -> None:
    for name, token in (("h1", None), (None, controller.token)):
        with controller.client(name, token) as client:
            r = client.post("/replicas/agent-command", json={"host": "h2", "op": "docker-run"})
            assert r.status_code == 403 and "needs a replica certificate" in detail(r)


def test_a_host_opens_its_own_stream_only(controller: Controller) -> None:
    context = controller.context("h1")
    assert controller.stream_refusal("h2", context) == (
        CLOSE_FORBIDDEN,
        "the certificate of host h1 may not open the stream of host h2, only its own")
    with controller.stream("h1", context) as ws:
        assert ws.ping().wait(5)  # accepted: served, not closed


def test_a_revoked_host_is_refused_and_its_stream_closed(controller: Controller) -> None:
    context = controller.context("h2")
    with controller.client(token=controller.token) as admin, \
            controller.stream("h2", context) as ws:
        assert ws.ping().wait(5)
        r = admin.post("/revocations", json={"host": "h2", "reason": "compromised"})
        assert r.status_code == 201, r.text
        revoked = time.monotonic()
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                ws.recv(timeout=10)
        took = time.monotonic() - revoked
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_FORBIDDEN
    assert closed.value.rcvd.reason.startswith(
        "the certificate of host h2 is revoked (host-h2: compromised)")
    print(f"stream of the revoked host closed {took:.2f} s after the revocation")
    # any certificate of h2 issued before the revocation (the test CA backdates its
    # certificates by 5 minutes) is refused
    with controller.client("h2") as h2:
        r = h2.get("/hosts")
    assert r.status_code == 403 and "is revoked (host-h2: compromised)" in detail(r)
    assert controller.stream_refusal("h2", context)[0] == CLOSE_FORBIDDEN
    # another host is untouched
    with controller.client("h1") as h1:
        assert h1.get("/hosts").status_code == 200

