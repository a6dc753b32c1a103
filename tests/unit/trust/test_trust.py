"""controller/trust: identities from certificates, contexts that reload renewed files
over real TLS on loopback, and revocations shared through the store."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from controller.store.sqlite import SqliteStore
from controller.trust.identity import CertRole, Identity, identity_of, identity_of_pem, peer_pem
from controller.trust.revocation import Revocations, parse_serial
from controller.trust.tls import ClientContext, ServerContext, TlsFiles
from tests.pki import TestCA


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_identity_names_role_name_and_serial(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("h1", "host")
    identity = identity_of(_cert(issued.cert_file))
    assert identity is not None
    assert (identity.role, identity.name, identity.serial) == (CertRole.HOST, "h1", issued.serial)
    assert identity_of_pem(issued.cert_file.read_text()) == identity


def test_a_certificate_of_no_daolinet_role_names_nobody(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    # the CA's own certificate has no OU: no identity
    assert identity_of(_cert(ca.cert_file)) is None
    assert identity_of_pem("not a certificate") is None


@contextmanager
def _tls_server(server: ServerContext) -> Iterator[tuple[int, list[str | None]]]:
    """A TLS echo of the peer certificate's CN on loopback (one handshake per accept)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    seen: list[str | None] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                with server.context.wrap_socket(conn, server_side=True) as tls:
                    pem = peer_pem(tls)
                    ident = identity_of_pem(pem) if pem else None
                    seen.append(ident.name if ident else None)
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                seen.append("refused")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def _connect(port: int, client: ClientContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            client.refresh().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.recv(2)


def _server_cn(port: int, ca: Path) -> str:
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    return str(cert.subject.rfc4514_string())


def test_mutual_tls_names_the_client_and_a_client_without_certificate_is_anonymous(
    tmp_path: Path,
) -> None:
    ca = TestCA(tmp_path)
    ctl = ca.issue("c1", "controller")
    host = ca.issue("h1", "host")
    server = ServerContext(TlsFiles(ca.cert_file, ctl.cert_file, ctl.key_file))
    with _tls_server(server) as (port, seen):
        assert _connect(port, ClientContext(ca.cert_file, TlsFiles(
            ca.cert_file, host.cert_file, host.key_file))) == b"ok"
        assert _connect(port, ClientContext(ca.cert_file)) == b"ok"
        # a certificate of another CA is refused at the handshake
        other = TestCA(tmp_path / "other").issue("h1", "host")
        with pytest.raises((ssl.SSLError, OSError)):
            _connect(port, ClientContext(ca.cert_file, TlsFiles(
                ca.cert_file, other.cert_file, other.key_file)))
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == ["h1", None, "refused"]


def test_a_client_refuses_a_server_of_another_ca(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    rogue_ca = TestCA(tmp_path / "rogue")
    rogue = rogue_ca.issue("c1", "controller")
    server = ServerContext(TlsFiles(rogue_ca.cert_file, rogue.cert_file, rogue.key_file))
    with _tls_server(server) as (port, _), pytest.raises(ssl.SSLCertVerificationError):
        _connect(port, ClientContext(ca.cert_file))


def test_the_server_serves_a_renewed_certificate_without_restart(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    ctl = ca.issue("c1", "controller", file_stem="controller")
    server = ServerContext(TlsFiles(ca.cert_file, ctl.cert_file, ctl.key_file))
    with _tls_server(server) as (port, _):
        assert _server_cn(port, ca.cert_file).startswith("CN=c1")
        ca.renew("c1-renewed", "controller", "controller")
        assert _server_cn(port, ca.cert_file).startswith("CN=c1-renewed")
    assert server.reloads == 1


def test_the_client_presents_a_renewed_certificate_without_restart(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    ctl = ca.issue("c1", "controller")
    host = ca.issue("h1", "host", file_stem="host")
    client = ClientContext(ca.cert_file, TlsFiles(ca.cert_file, host.cert_file, host.key_file))
    server = ServerContext(TlsFiles(ca.cert_file, ctl.cert_file, ctl.key_file))
    with _tls_server(server) as (port, seen):
        _connect(port, client)
        ca.renew("h1-renewed", "host", "host")
        _connect(port, client)
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == ["h1", "h1-renewed"]
    assert client.reloads == 1


def test_a_half_written_renewal_keeps_the_current_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    host = ca.issue("h1", "host")
    client = ClientContext(ca.cert_file, TlsFiles(ca.cert_file, host.cert_file, host.key_file))
    host.cert_file.write_text("-----BEGIN CERTIFICATE-----\n")  # caught mid-write
    assert client.refresh() is client.context
    assert client.reloads == 0


def test_bad_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    host = ca.issue("h1", "host")
    with pytest.raises(ValueError, match=r"ca\.crt"):
        ClientContext(tmp_path / "missing" / "ca.crt")
    with pytest.raises(ValueError, match=r"h1\.crt"):
        ServerContext(TlsFiles(ca.cert_file, host.cert_file, ca.directory / "ca.key"))


def _identity(name: str, serial: int, issued: float, role: CertRole = CertRole.HOST) -> Identity:
    return Identity(role, name, serial, issued)


def test_revoking_a_serial_refuses_that_certificate_only(tmp_path: Path) -> None:
    revocations = Revocations(SqliteStore(tmp_path / "db"), clock=lambda: 1000.0)
    revocations.revoke(serial=0xABC, reason="key lost")
    assert revocations.refused(_identity("h1", 0xABC, 10.0)) is not None
    assert revocations.refused(_identity("h1", 0xABD, 10.0)) is None


def test_revoking_a_host_refuses_its_older_certificates_not_a_new_one(tmp_path: Path) -> None:
    revocations = Revocations(SqliteStore(tmp_path / "db"), clock=lambda: 1000.0)
    revocations.revoke(host="h1", reason="compromised")
    assert revocations.refused(_identity("h1", 1, 999.0)) is not None
    assert revocations.refused(_identity("h1", 2, 1001.0)) is None  # re-issued after
    assert revocations.refused(_identity("h2", 3, 999.0)) is None
    # a controller named like the host is not a host
    assert revocations.refused(_identity("h1", 4, 999.0, CertRole.CONTROLLER)) is None


def test_revocations_are_shared_through_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    Revocations(store).revoke(serial=7, reason="")
    other = Revocations(store)  # another replica, or a restart
    assert other.refused(_identity("h1", 7, 0.0)) is not None
    store.put("revoked", "bad", {"serial": "zz"})  # one bad record
    assert len(Revocations(store).list()) == 1


def test_a_revocation_names_one_serial_or_one_host(tmp_path: Path) -> None:
    revocations = Revocations(SqliteStore(tmp_path / "db"))
    with pytest.raises(ValueError):
        revocations.revoke(serial=1, host="h1")
    with pytest.raises(ValueError):
        revocations.revoke(host="../etc")
    assert parse_serial("0A:BC") == 0xABC
    with pytest.raises(ValueError):
        parse_serial("xyz")


def test_issued_is_the_not_before_of_the_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    start = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    issued = ca.issue("h1", "host", not_before=start, days=1000)
    identity = identity_of(_cert(issued.cert_file))
    assert identity is not None and identity.issued == start.timestamp()
