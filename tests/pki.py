"""A throw-away certificate authority for tests, issuing certificates the way the
deployment does (docs/security.md): one CA per deployment, and an etcd CA apart from
it (another TestCA: tests/etcdcluster.py); each certificate names its
holder in the subject's common name and its role in the organizational unit
(``host``, ``controller``, ``etcd``, ``operator``), with the holder's addresses as
subject alternative names.

    ca = TestCA(tmp_path / "pki")
    host = ca.issue("h1", "host", ips=["198.18.1.2"])      # writes h1.key, h1.crt
    ctl = ca.issue("c1", "controller", ips=["127.0.0.1"])
    ca.cert_file                                             # the CA certificate (PEM)

Each key is made here, next to the certificate, because the test is both the host and
the CA; in a deployment the key is made on the host and only a CSR leaves it.  Keys
are ECDSA P-256 (fast to make, what the roles use).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("host", "controller", "etcd", "operator")


@dataclass(frozen=True)
class Issued:
    """One issued certificate and its key, as files."""

    name: str
    role: str
    key_file: Path
    cert_file: Path
    serial: int


def _name(common_name: str, role: str | None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "daolinet")]
    if role is not None:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class TestCA:
    """A CA whose key and certificate live in ``directory`` (created if absent)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "daolinet test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = _name(name, None)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    key_cert_sign=True, crl_sign=True, encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / "ca.crt"
        self.cert_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self._key, directory / "ca.key")

    def issue(
        self,
        name: str,
        role: str,
        *,
        ips: Iterable[str] = ("127.0.0.1",),
        dns: Iterable[str] = (),
        days: float = 1.0,
        not_before: datetime.datetime | None = None,
        file_stem: str | None = None,
    ) -> Issued:
        """Make a key and a certificate for ``name`` in ``role``; write
        ``<file_stem or name>.key`` and ``.crt`` in the CA's directory.  ``days`` may
        be negative (with ``not_before``) to make an expired certificate."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            minutes=5
        )
        alt_names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips
        ]
        alt_names += [x509.DNSName(d) for d in (*dns, name)]
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name, role))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = file_stem or name
        key_file = self.directory / f"{stem}.key"
        cert_file = self.directory / f"{stem}.crt"
        _write_key(key, key_file)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Issued(name, role, key_file, cert_file, serial)

    def renew(self, name: str, role: str, stem: str) -> None:
        """Issue a new certificate into the same files `stem`.crt/.key (as a renewal
        does), with a later modification time even on a coarse clock."""
        self.issue(name, role, file_stem=stem)
        later = time.time() + 2
        for suffix in (".crt", ".key"):
            os.utime(self.directory / f"{stem}{suffix}", (later, later))
