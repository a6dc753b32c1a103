"""Revoked credentials, kept in the store and shared by the replicas.

Two kinds of revocation (docs/security.md, "Revocation"):

* a serial: that one certificate is refused;
* a host: every certificate naming that host issued before the revocation (its
  notBefore earlier) is refused; a certificate issued afterwards, for a re-made key,
  is accepted.  This is the answer to a compromised host whose serials are unknown.

Each replica keeps the set in memory: its own revocations at once, the other
replicas' through the store's watch (`apply`, registered by controller/main.py).
A revocation is never lifted through the API; a new certificate is issued instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.store.base import Store
from controller.trust.identity import NAME, CertRole, Identity

log = logging.getLogger(__name__)

REVOKED = "revoked"  # store kind
MAX_REASON = 200


@dataclass(frozen=True)
class Revocation:
    """One revocation: of a certificate `serial`, or of every certificate of host
    `host` issued before `at`."""

    at: float
    reason: str
    serial: int | None = None
    host: str | None = None

    @property
    def key(self) -> str:
        return f"serial-{self.serial:x}" if self.serial is not None else f"host-{self.host}"

    def refuses(self, identity: Identity) -> bool:
        if self.serial is not None:
            return identity.serial == self.serial
        return (identity.role is CertRole.HOST and identity.name == self.host
                and identity.issued < self.at)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"at": self.at, "reason": self.reason}
        if self.serial is not None:
            doc["serial"] = f"{self.serial:x}"
        if self.host is not None:
            doc["host"] = self.host
        return doc

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Revocation:
        """The revocation of a stored document; ValueError if it is none."""
        at, reason = doc.get("at"), doc.get("reason", "")
        if not isinstance(at, int | float) or not isinstance(reason, str):
            raise ValueError(f"revocation without a time or reason: {doc!r}")
        serial, host = doc.get("serial"), doc.get("host")
        if isinstance(serial, str) and host is None:
            return cls(float(at), reason, serial=int(serial, 16))
        if isinstance(host, str) and serial is None and NAME.match(host):
            return cls(float(at), reason, host=host)
        raise ValueError(f"revocation of neither one serial nor one host: {doc!r}")


def parse_serial(value: str) -> int:
    """A certificate serial as openssl prints it (hex, colons allowed); ValueError."""
    text = value.strip().replace(":", "").lower().removeprefix("0x")
    if not text or len(text) > 40 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"serial {value!r} is not a certificate serial (hex, <= 20 bytes)")
    return int(text, 16)


class Revocations:
    """The revoked credentials of the deployment (loaded from `store` at start)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[str, Revocation] = {}
        for doc in store.list(REVOKED):
            self.apply(doc)

    def refused(self, identity: Identity) -> Revocation | None:
        """The revocation that refuses this identity, or None."""
        with self._lock:
            exact = self._by_key.get(f"serial-{identity.serial:x}")
            if exact is not None:
                return exact
            if identity.role is CertRole.HOST:
                by_host = self._by_key.get(f"host-{identity.name}")
                if by_host is not None and by_host.refuses(identity):
                    return by_host
        return None

    def revoke(self, *, serial: int | None = None, host: str | None = None,
               reason: str = "") -> Revocation:
        """Revoke a serial or a host's certificates; written to the store first."""
        if (serial is None) == (host is None):
            raise ValueError("revoke either one serial or one host")
        if host is not None and not NAME.match(host):
            raise ValueError(f"host {host!r} is not a host name")
        revocation = Revocation(self.clock(), reason[:MAX_REASON], serial=serial, host=host)
        self.store.put(REVOKED, revocation.key, revocation.document())
        self._add(revocation)
        log.warning("revoked %s: %s", revocation.key, revocation.reason or "no reason given")
        return revocation

    def apply(self, doc: dict[str, Any] | None) -> None:
        """A revocation document from the store (at start, or another replica's
        through the watch); a malformed one is logged and skipped."""
        if doc is None:
            return  # revocations are not deleted through daolinet
        try:
            self._add(Revocation.of(doc))
        except ValueError as exc:
            log.error("ignoring a stored revocation: %s", exc)

    def _add(self, revocation: Revocation) -> None:
        with self._lock:
            self._by_key[revocation.key] = revocation

    def list(self) -> list[Revocation]:
        with self._lock:
            return sorted(self._by_key.values(), key=lambda r: (r.at, r.key))
