"""Which switch connections the controller serves (docs/security.md, "OpenFlow").

With TLS the listener already refused any connection without a certificate of the
deployment's CA (the handshake requires one).  What the handshake cannot know is the
datapath id: the switch says it only in its features reply.  So, after that reply and
before the connection is added to the switches (where it would replace the
datapath's connection, take its master role and see its PacketIns), the
certificate must be a host's (OU=host), name a registered host (CN), and that host
must have registered this datapath id; its serial must not be revoked.  A refused
connection is closed and counted by reason (`daolinet_switch_connections_refused_total`;
a failed handshake is counted by the listener, controller/openflow/listener.py).

Without TLS (--insecure-plaintext) every connection is admitted: there is nothing to
check a datapath id against.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from controller.trust.identity import CertRole, Identity, identity_of_der

log = logging.getLogger(__name__)

# Reasons of a refusal, the label values of the metric.
TLS_HANDSHAKE = "tls_handshake"  # no certificate, not of our CA, expired, not TLS
NO_CERTIFICATE = "no_certificate"
NOT_A_HOST = "not_a_host"
UNKNOWN_HOST = "unknown_host"
FOREIGN_DPID = "foreign_dpid"
REVOKED = "revoked"
REASONS = (TLS_HANDSHAKE, NO_CERTIFICATE, NOT_A_HOST, UNKNOWN_HOST, FOREIGN_DPID, REVOKED)


class Refused(Exception):
    """A connection the controller does not serve; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def peer_certificate(socket: Any) -> bytes | None:
    """The verified certificate (DER) of a connection's peer; None on a plain socket
    or when the peer sent none."""
    getpeercert = getattr(socket, "getpeercert", None)
    if getpeercert is None:
        return None
    der: bytes | None = getpeercert(binary_form=True)
    return der or None


class Admission:
    """Decides whether a switch connection with datapath id `dpid` and peer
    certificate `cert` (DER) is served; see the module docstring.

    `owner_of(host)` is the datapath id host registered (None: no such host);
    `revoked(identity)` whether that certificate is revoked (controller/trust).
    """

    def __init__(
        self,
        owner_of: Callable[[str], int | None],
        *,
        tls: bool,
        revoked: Callable[[Identity], bool] = lambda identity: False,
    ) -> None:
        self.tls = tls
        self._owner_of = owner_of
        self.revoked = revoked
        self._lock = threading.Lock()
        self._refused: dict[str, int] = dict.fromkeys(REASONS, 0)

    def admit(self, dpid: int, cert: bytes | None) -> Identity | None:
        """The connection's host (None without TLS); raises Refused (counted)."""
        if not self.tls:
            return None
        try:
            return self._check(dpid, cert)
        except Refused as refused:
            self.count(refused.reason)
            raise

    def _check(self, dpid: int, cert: bytes | None) -> Identity:
        if cert is None:
            raise Refused(NO_CERTIFICATE, "no client certificate")
        identity = identity_of_der(cert)
        if identity is None:
            raise Refused(NOT_A_HOST, "the certificate names no daolinet host "
                          "(O=daolinet, OU=host, CN=<host>)")
        if identity.role is not CertRole.HOST:
            raise Refused(NOT_A_HOST, f"the certificate of {identity} is not a host's")
        if self.revoked(identity):
            raise Refused(REVOKED, f"the certificate of {identity} is revoked")
        owned = self._owner_of(identity.name)
        if owned is None:
            raise Refused(UNKNOWN_HOST, f"{identity}: no such host is registered")
        if owned != dpid:
            raise Refused(
                FOREIGN_DPID,
                f"datapath {dpid:016x} is not host {identity.name}'s (it registered "
                f"{owned:016x})",
            )
        return identity

    def count(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    def refusals(self) -> dict[str, int]:
        """Connections refused so far, by reason."""
        with self._lock:
            return dict(self._refused)
