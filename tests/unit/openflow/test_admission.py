"""Which switch connections are served (controller/openflow/admission.py): a host's
certificate admits its own datapath id only; every refusal is counted by reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from controller.openflow.admission import (
    FOREIGN_DPID,
    NO_CERTIFICATE,
    NOT_A_HOST,
    REVOKED,
    UNKNOWN_HOST,
    Admission,
    Refused,
    peer_certificate,
)
from controller.trust.identity import CertRole, Identity
from tests.pki import TestCA

DPIDS = {"h1": 0x11, "h2": 0x22}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


def der(ca: TestCA, name: str, role: str) -> bytes:
    """The DER certificate of a new `role` certificate for `name`, as
    `getpeercert(binary_form=True)` gives it."""
    issued = ca.issue(name, role, file_stem=f"{role}-{name}")
    return x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).public_bytes(
        Encoding.DER)


def serial(cert: bytes) -> int:
    return x509.load_der_x509_certificate(cert).serial_number


def admission(revoked: set[int] | None = None) -> Admission:
    return Admission(DPIDS.get, tls=True,
                     revoked=lambda identity: identity.serial in (revoked or set()))


def test_a_host_certificate_admits_its_own_datapath(ca: TestCA) -> None:
    a = admission()
    h1, h2 = der(ca, "h1", "host"), der(ca, "h2", "host")
    got = a.admit(0x11, h1)
    assert got is not None and (got.role, got.name, got.serial) == (
        CertRole.HOST, "h1", serial(h1))
    got = a.admit(0x22, h2)
    assert got is not None and got.name == "h2"
    assert sum(a.refusals().values()) == 0


@pytest.mark.parametrize(("dpid", "name", "role", "reason", "message"), [
    (0x22, "h1", "host", FOREIGN_DPID, "datapath 0000000000000022 is not host h1's"),
    (0x11, "h1", "controller", NOT_A_HOST, "certificate of controller h1 .* is not a host's"),
    (0x11, "h1", "operator", NOT_A_HOST, "is not a host's"),
    (0x33, "h3", "host", UNKNOWN_HOST, "host h3 .*: no such host is registered"),
])
def test_refusals_name_the_reason_and_are_counted(
    ca: TestCA, dpid: int, name: str, role: str, reason: str, message: str
) -> None:
    a = admission()
    with pytest.raises(Refused, match=message) as refused:
        a.admit(dpid, der(ca, name, role))
    assert refused.value.reason == reason
    assert a.refusals()[reason] == 1
    assert sum(a.refusals().values()) == 1


def test_no_certificate_or_one_naming_nobody_is_refused(tmp_path: Path) -> None:
    a = admission()
    with pytest.raises(Refused, match="no client certificate") as refused:
        a.admit(0x11, None)
    assert refused.value.reason == NO_CERTIFICATE
    with pytest.raises(Refused, match="names no daolinet host") as refused:
        a.admit(0x11, b"not a certificate")
    assert refused.value.reason == NOT_A_HOST


def test_a_revoked_certificate_is_refused_and_another_of_the_host_is_not(ca: TestCA) -> None:
    old, new = der(ca, "h1", "host"), der(ca, "h1", "host")
    a = admission(revoked={serial(old)})
    with pytest.raises(Refused, match="revoked") as refused:
        a.admit(0x11, old)
    assert refused.value.reason == REVOKED
    got = a.admit(0x11, new)
    assert isinstance(got, Identity) and got.serial == serial(new)


def test_without_tls_every_connection_is_admitted_without_identity(ca: TestCA) -> None:
    a = Admission(DPIDS.get, tls=False)
    assert a.admit(0x22, None) is None
    assert a.admit(0x99, der(ca, "h1", "host")) is None
    assert sum(a.refusals().values()) == 0


def test_peer_certificate_of_plain_and_tls_sockets() -> None:
    class Plain:
        pass

    class Tls:
        def __init__(self, c: bytes | None) -> None:
            self.c = c

        def getpeercert(self, binary_form: bool = False) -> bytes | None:
            assert binary_form
            return self.c

    assert peer_certificate(Plain()) is None
    assert peer_certificate(Tls(None)) is None
    assert peer_certificate(Tls(b"DER")) == b"DER"
