"""exclusive() on etcd: one lock key for every replica of a store, and fencing.

The lock is `PREFIX/lock`, created only if absent and attached to the store object's
session lease (lease.py), so it goes away by itself within the lease's ttl when its
holder dies or is cut off.  The lock key's create revision identifies one holding:
writes made inside exclusive() compare it in their transaction (`compare`), so once the
holding is lost (the lease expired during a partition, say) they change nothing and
raise StoreUnavailable (`lost`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from controller.store.base import StoreError, StoreUnavailable, dump_document
from controller.store.etcd.client import (
    GRPC_NOT_FOUND,
    EtcdClient,
    EtcdRequestError,
    b64,
    unb64,
)
from controller.store.etcd.keys import Keyspace
from controller.store.etcd.lease import SessionLease

log = logging.getLogger(__name__)


@dataclass
class Held:
    """exclusive() held by one thread: the lock key's create_revision fences writes."""

    revision: int
    depth: int = 1


class EtcdLock:
    """The lock of one store object: reentrant in a thread, exclusive among this
    object's threads (a local lock) and among every replica (the lock key)."""

    def __init__(self, client: EtcdClient, keys: Keyspace, session: SessionLease) -> None:
        self._client = client
        self._keys = keys
        self._session = session
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local = threading.Lock()  # exclusive() among this object's threads
        self._tls = threading.local()

    def held(self) -> Held | None:
        """The calling thread's holding, if it is inside exclusive()."""
        held: Held | None = getattr(self._tls, "held", None)
        return held

    def compare(self, held: Held) -> dict[str, Any]:
        """A transaction comparison: the lock is still this holding."""
        return {
            "key": b64(self._keys.lock),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": held.revision,
        }

    def check(self, held: Held, lock_kv: dict[str, Any] | None) -> None:
        """Raise `lost` unless `lock_kv` (the lock key as a failed fenced write read it)
        is still this holding."""
        if lock_kv is None or int(lock_kv.get("create_revision", 0)) != held.revision:
            raise self.lost(held)

    def lost(self, held: Held) -> StoreUnavailable:
        return StoreUnavailable(
            f"etcd: lost exclusive access to the store {self._client.name} (the lock of "
            f"revision {held.revision} expired or was taken over); nothing was written"
        )

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 5.0) -> Iterator[None]:
        held = self.held()
        if held is not None:  # reentrant: the same thread already holds it
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
            return
        deadline = time.monotonic() + timeout
        if not self._local.acquire(timeout=max(timeout, 0.0)):
            raise StoreUnavailable(
                f"etcd: no exclusive access to the store {self._client.name} within "
                f"{timeout:g} s (another thread of this process holds it)"
            )
        try:
            held = self._acquire(deadline, timeout)
            self._tls.held = held
            try:
                yield
            finally:
                self._tls.held = None
                self._release(held)
        finally:
            self._local.release()

    def _acquire(self, deadline: float, timeout: float) -> Held:
        token = uuid.uuid4().hex
        value = dump_document({"owner": self._owner, "token": token}).encode()
        delay = 0.005
        while True:
            lease = self._session.get()
            try:
                reply = self._client.put_if_absent(self._keys.lock, value, lease)
            except StoreError as exc:
                self._session.drop(lease)  # the put may have been applied: let it expire
                if isinstance(exc, EtcdRequestError) and exc.code == GRPC_NOT_FOUND:
                    continue  # "requested lease not found": take a new one
                raise
            if reply.body.get("succeeded"):
                return Held(reply.revision)
            kv = reply.ranged(0)
            if kv is None:
                continue  # released in between: try again at once
            current = unb64(kv.get("value", ""))
            if current == value:  # an earlier attempt of this very request won
                return Held(int(kv["create_revision"]))
            holder = "?"
            with contextlib.suppress(ValueError, AttributeError):
                holder = json.loads(current).get("owner", "?")
            now = time.monotonic()
            if now >= deadline:
                raise StoreUnavailable(
                    f"etcd: no exclusive access to the store {self._client.name} within "
                    f"{timeout:g} s (held by {holder})"
                )
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)

    def _release(self, held: Held) -> None:
        try:
            self._client.txn(
                [self.compare(held)],
                [{"request_delete_range": {"key": b64(self._keys.lock)}}],
                [],
            )
        except StoreError as exc:
            # The lock key lives on the session lease, which the keepalive thread would
            # renew for ever: give the session up, so the lease (and the lock with it)
            # expires within its ttl, and take a new one next time.
            log.warning(
                "etcd store %s: releasing the lock failed (%s); it expires with its lease "
                "within %d s", self._keys.prefix, exc, self._session.ttl,
            )
            self._session.forget()
