"""etcd leases: grant, keep alive, revoke; and the store's session lease, which the lock
key lives on (lock.py), kept alive by a background thread while the store is open."""

from __future__ import annotations

import logging
import threading

from controller.store.base import StoreError
from controller.store.etcd.client import EtcdClient

log = logging.getLogger(__name__)

DEFAULT_LOCK_TTL = 3  # seconds: the session lease behind exclusive()


def grant(client: EtcdClient, ttl: int) -> tuple[int, int]:
    """A new lease of `ttl` seconds: (its ID, the TTL etcd granted - whole seconds, at
    least etcd's minimum)."""
    reply = client.call("/lease/grant", {"TTL": ttl, "ID": 0})
    return int(reply.body["ID"]), int(reply.body.get("TTL", 0))


def keepalive(client: EtcdClient, lease: int) -> int:
    """Renew a lease: the seconds it has left, 0 if it expired (or was revoked)."""
    reply = client.call("/lease/keepalive", {"ID": lease})
    return int(reply.body.get("result", {}).get("TTL", 0))


def revoke(client: EtcdClient, lease: int) -> None:
    """End a lease now, and with it every key attached to it (tried once: it expires by
    itself anyway)."""
    client.call("/kv/lease/revoke", {"ID": lease}, retry_for=0.0)


def revoke_quietly(client: EtcdClient, lease: int, what: str) -> None:
    """revoke, best effort: a failure is logged (the lease expires by itself)."""
    try:
        revoke(client, lease)
    except Exception as exc:
        log.info("%s: revoking lease %x: %s", what, lease, exc)


class SessionLease:
    """The lease of one store object's lock key: granted on first use, kept alive every
    ttl / 3 seconds by a background thread until the client closes; dropped (a new one
    granted next time) when it expires or its lock could not be released."""

    def __init__(self, client: EtcdClient, ttl: int, name: str) -> None:
        self.client = client
        self.ttl = ttl
        self.name = name  # the store's prefix, in logs
        self._guard = threading.Lock()
        self._lease: int | None = None
        self._keeper: threading.Thread | None = None

    @property
    def current(self) -> int | None:
        """The lease now in use, if any."""
        return self._lease

    def get(self) -> int:
        """The lease, granted now if there is none."""
        with self._guard:
            if self._lease is None:
                self._lease, _ = grant(self.client, self.ttl)
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep, name=f"etcd-lease {self.name}", daemon=True
                )
                self._keeper.start()
            return self._lease

    def _keep(self) -> None:
        while not self.client.closed.wait(max(self.ttl / 3, 0.2)):
            lease = self._lease
            if lease is None:
                continue
            try:
                left = keepalive(self.client, lease)
            except StoreError as exc:
                log.warning("etcd store %s: lock lease keepalive failed: %s", self.name, exc)
                continue
            if left <= 0:
                log.warning("etcd store %s: lock lease %x expired", self.name, lease)
                self.drop(lease)

    def drop(self, lease: int) -> None:
        """Stop using `lease` (if still the current one): it expires by itself, and the
        next get() grants a new one."""
        with self._guard:
            if self._lease == lease:
                self._lease = None

    def forget(self) -> None:
        """Stop using the current lease, whichever it is (see drop)."""
        with self._guard:
            self._lease = None

    def revoke(self) -> None:
        """Revoke the current lease now (frees the lock if a thread still holds it)."""
        with self._guard:
            lease, self._lease = self._lease, None
        if lease is not None:
            revoke_quietly(self.client, lease, f"etcd store {self.name}")

    def join(self, timeout: float) -> None:
        """Wait for the keepalive thread to end (it does once the client is closed)."""
        if self._keeper is not None:
            self._keeper.join(timeout)
