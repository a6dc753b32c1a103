"""Which switch connections are served (controller/openflow/admission.py): a host's
certificate admits its own datapath id only; every refusal is counted by reason."""

from __future__ import annotations

from typing import Any

import pytest

from controller.openflow.admission import (
    FOREIGN_DPID,
    NO_CERTIFICATE,
    NOT_A_HOST,
    REVOKED,
    UNKNOWN_HOST,
    Admission,
    Peer,
    Refused,
    peer_certificate,
)

DPIDS = {"h1": 0x11, "h2": 0x22}


def cert(ou: str | None, cn: str | None, serial: str = "1A2B") -> dict[str, Any]:
    """A verified certificate as `SSLSocket.getpeercert()` gives it."""
    subject: list[tuple[tuple[str, str], ...]] = [(("organizationName", "daolinet"),)]
    if ou is not None:
        subject.append((("organizationalUnitName", ou),))
    if cn is not None:
        subject.append((("commonName", cn),))
    return {"subject": tuple(subject), "serialNumber": serial}


def admission(revoked: set[int] | None = None) -> Admission:
    return Admission(DPIDS.get, tls=True, revoked=lambda s: s in (revoked or set()))


def test_a_host_certificate_admits_its_own_datapath() -> None:
    a = admission()
    assert a.admit(0x11, cert("host", "h1")) == Peer("h1", 0x1A2B)
    assert a.admit(0x22, cert("host", "h2")) == Peer("h2", 0x1A2B)
    assert sum(a.refusals().values()) == 0


@pytest.mark.parametrize(("dpid", "certificate", "reason", "message"), [
    (0x22, cert("host", "h1"), FOREIGN_DPID, "datapath 0000000000000022 is not host h1's"),
    (0x11, None, NO_CERTIFICATE, "no client certificate"),
    (0x11, cert("controller", "h1"), NOT_A_HOST, "OU=controller CN=h1 is not a host's"),
    (0x11, cert(None, "h1"), NOT_A_HOST, "OU=None"),
    (0x11, cert("host", None), NOT_A_HOST, "CN=None"),
    (0x33, cert("host", "h3"), UNKNOWN_HOST, "CN=h3 names no registered host"),
])
def test_refusals_name_the_reason_and_are_counted(
    dpid: int, certificate: dict[str, Any] | None, reason: str, message: str
) -> None:
    a = admission()
    with pytest.raises(Refused, match=message) as refused:
        a.admit(dpid, certificate)
    assert refused.value.reason == reason
    assert a.refusals()[reason] == 1
    assert sum(a.refusals().values()) == 1


def test_a_subject_naming_two_hosts_is_refused() -> None:
    twice = cert("host", "h1")
    twice["subject"] += ((("commonName", "h2"),),)
    with pytest.raises(Refused, match="commonName twice") as refused:
        admission().admit(0x22, twice)
    assert refused.value.reason == NOT_A_HOST


def test_a_revoked_serial_is_refused_and_another_serial_of_the_host_is_not() -> None:
    a = admission(revoked={0x1A2B})
    with pytest.raises(Refused, match="revoked") as refused:
        a.admit(0x11, cert("host", "h1", "1A2B"))
    assert refused.value.reason == REVOKED
    assert a.admit(0x11, cert("host", "h1", "1A2C")) == Peer("h1", 0x1A2C)


def test_without_tls_every_connection_is_admitted_without_identity() -> None:
    a = Admission(DPIDS.get, tls=False)
    assert a.admit(0x22, None) is None
    assert a.admit(0x99, cert("host", "h1")) is None
    assert sum(a.refusals().values()) == 0


def test_peer_certificate_of_plain_and_tls_sockets() -> None:
    class Plain:
        pass

    class Tls:
        def __init__(self, c: dict[str, Any]) -> None:
            self.c = c

        def getpeercert(self) -> dict[str, Any]:
            return self.c

    assert peer_certificate(Plain()) is None
    assert peer_certificate(Tls({})) is None
    assert peer_certificate(Tls(cert("host", "h1"))) == cert("host", "h1")
