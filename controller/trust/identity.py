"""The identity of a caller, from the certificate its TLS connection presented.

Certificates of a deployment (docs/security.md, "Identity per host") name their
holder in the subject: O=daolinet, OU=<role>, CN=<name>.  The TLS layer has already
verified the chain against the deployment's CA when this module reads a certificate:
here only its subject and serial are read, never trusted without that check.
"""

from __future__ import annotations

import enum
import functools
import re
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

ORGANIZATION = "daolinet"
# The names a certificate may carry: daolinet's names (controller/desired/models.py
# `Name`), so a certificate's name is usable as a host or replica name as it is.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class CertRole(enum.Enum):
    """The organizational unit of a certificate: what its holder is."""

    HOST = "host"
    CONTROLLER = "controller"
    ETCD = "etcd"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Identity:
    """A verified certificate's holder: its role, its name, and the certificate's
    serial (what a revocation names)."""

    role: CertRole
    name: str
    serial: int
    issued: float = 0.0  # the certificate's notBefore (seconds since the epoch)

    def __str__(self) -> str:
        return f"{self.role.value} {self.name} (certificate serial {self.serial:x})"


def _one(subject: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The identity a daolinet certificate names; None for a certificate that names
    none (another organization, no or several OU/CN, an unknown role, a bad name)."""
    subject = cert.subject
    if _one(subject, NameOID.ORGANIZATION_NAME) != ORGANIZATION:
        return None
    unit = _one(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = _one(subject, NameOID.COMMON_NAME)
    if unit is None or name is None or not NAME.match(name):
        return None
    try:
        role = CertRole(unit)
    except ValueError:
        return None
    return Identity(role, name, cert.serial_number,
                    cert.not_valid_before_utc.timestamp())


@functools.lru_cache(maxsize=4096)
def identity_of_der(der: bytes) -> Identity | None:
    """`identity_of` a DER certificate (cached: a connection's certificate is read
    once, not per request)."""
    try:
        return identity_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def identity_of_pem(pem: str) -> Identity | None:
    """`identity_of` a PEM certificate (the ASGI TLS extension carries PEM)."""
    try:
        return identity_of(x509.load_pem_x509_certificate(pem.encode()))
    except ValueError:
        return None


def peer_pem(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer certificate of a TLS connection, as PEM; None without TLS or
    without a client certificate.  `getpeercert(binary_form=True)` returns it only
    once the handshake verified it against the CA (the server context's
    CERT_OPTIONAL does so when the client sends one)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der) if der else None


def scope_identity(scope: dict[str, Any] | Any) -> Identity | None:
    """The caller's identity of an ASGI scope: the first certificate of the ASGI TLS
    extension's `client_cert_chain` (controller/api/tlsscope.py puts it there)."""
    extensions = scope.get("extensions") or {}
    tls = extensions.get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    return identity_of_pem(str(chain[0]))
