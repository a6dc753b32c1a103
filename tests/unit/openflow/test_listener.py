"""The OpenFlow TLS listener (controller/openflow/listener.py), on loopback with a
test CA: a connection without a certificate, with one of another CA, or in plain TCP
is refused and counted; a host's certificate gets through to os-ken's handler."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.openflow.admission import TLS_HANDSHAKE, Admission
from controller.openflow.listener import TLSListener, server_context
from tests.pki import Issued, TestCA


class Served:
    """What the listener handed on: (peer certificate, address) per connection."""

    def __init__(self) -> None:
        self.peers: list[dict[str, object]] = []
        self.event = threading.Event()

    def __call__(self, sock: ssl.SSLSocket, addr: tuple[str, int]) -> None:
        self.peers.append(sock.getpeercert() or {})
        sock.sendall(b"hello")
        sock.close()
        self.event.set()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def setup(ca: TestCA) -> Iterator[tuple[TLSListener, Admission, Served]]:
    ctl = ca.issue("c1", "controller")
    admission = Admission(lambda name: None, tls=True)
    served = Served()
    lst = TLSListener(("127.0.0.1", 0),
                      lambda: server_context(ca.cert_file, ctl.cert_file, ctl.key_file),
                      admission, served)
    lst.start()
    try:
        yield lst, admission, served
    finally:
        lst.close()


def client(ca: TestCA, issued: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    if issued is not None:
        context.load_cert_chain(issued.cert_file, issued.key_file)
    return context


def talk(port: int, context: ssl.SSLContext | None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if context is None:
            raw.sendall(b"\x04\x00\x00\x08\x00\x00\x00\x01")  # an OpenFlow hello, in clear
            return raw.recv(100)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(100)  # TLS 1.3: a refused certificate shows on the first read


def refusals(admission: Admission) -> int:
    return admission.refusals()[TLS_HANDSHAKE]


def wait_refusals(admission: Admission, n: int) -> None:
    for _ in range(100):
        if refusals(admission) >= n:
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"{refusals(admission)} refusals, not {n}")


def test_a_host_certificate_is_handed_on(ca: TestCA, setup: tuple[TLSListener, Admission,
                                                                  Served]) -> None:
    lst, admission, served = setup
    assert talk(lst.port, client(ca, ca.issue("h1", "host"))) == b"hello"
    assert served.event.wait(5)
    subject = dict(rdn[0] for rdn in served.peers[0]["subject"])  # type: ignore[attr-defined]
    assert subject["commonName"] == "h1" and subject["organizationalUnitName"] == "host"
    assert refusals(admission) == 0


def test_no_certificate_is_refused_and_counted(
    ca: TestCA, setup: tuple[TLSListener, Admission, Served]
) -> None:
    lst, admission, served = setup
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(lst.port, client(ca, None))
    wait_refusals(admission, 1)
    assert served.peers == []


def test_a_certificate_of_another_ca_is_refused(
    ca: TestCA, tmp_path: Path, setup: tuple[TLSListener, Admission, Served]
) -> None:
    lst, admission, served = setup
    rogue = TestCA(tmp_path / "rogue").issue("h1", "host")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        talk(lst.port, client(ca, rogue))
    wait_refusals(admission, 1)
    assert served.peers == []


def test_plain_tcp_is_refused(setup: tuple[TLSListener, Admission, Served]) -> None:
    lst, admission, served = setup
    try:
        answer = talk(lst.port, None)
    except ConnectionError:
        answer = b""
    assert not answer.startswith(b"\x04")  # no OpenFlow answer
    wait_refusals(admission, 1)
    assert served.peers == []


def test_a_silent_connection_is_dropped_after_the_handshake_timeout(ca: TestCA) -> None:
    ctl = ca.issue("c1", "controller")
    admission = Admission(lambda name: None, tls=True)
    lst = TLSListener(("127.0.0.1", 0),
                      lambda: server_context(ca.cert_file, ctl.cert_file, ctl.key_file),
                      admission, Served(), handshake_timeout=0.2)
    lst.start()
    try:
        with socket.create_connection(("127.0.0.1", lst.port), timeout=5) as raw:
            assert raw.recv(10) == b""  # closed by the listener, nothing sent
        wait_refusals(admission, 1)
    finally:
        lst.close()
