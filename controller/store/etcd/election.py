"""Leadership on etcd: try_lead creates a key ("PREFIX/leader", or "PREFIX/member/NAME"
for a replica's membership) if absent, attached to a lease of its own; the key's create
revision is the leadership's generation, so a later leadership's is always greater.
The leadership lives while its holder refreshes the lease, and ends with the lease."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from controller.store.base import Leadership, StoreError, check_lead, dump_document
from controller.store.etcd.client import (
    GRPC_NOT_FOUND,
    EtcdClient,
    EtcdRequestError,
    kv_document,
    unb64,
)
from controller.store.etcd.keys import Keyspace
from controller.store.etcd.lease import grant, keepalive, revoke, revoke_quietly

log = logging.getLogger(__name__)


class EtcdLeadership:
    """A leadership won by Election.try_lead: its key, attached to its lease."""

    def __init__(self, client: EtcdClient, lease: int, generation: int, key: bytes) -> None:
        self.generation = generation
        self.lease = lease
        self.key = key
        self._client = client
        self._lost = False
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        with self._lock:
            if self._lost:
                return False
            try:
                left = keepalive(self._client, self.lease)
                kv = self._client.get_kv(self.key) if left > 0 else None
            except StoreError as exc:
                log.warning("leadership %d: refresh failed: %s", self.generation, exc)
                kv = None
            if (
                kv is None
                or int(kv.get("create_revision", 0)) != self.generation
                or int(kv.get("lease", 0)) != self.lease
            ):
                self._lost = True
                return False
            return True

    def resign(self) -> None:
        with self._lock:
            self._lost = True
        # Revoking the lease deletes the leadership's key with it.
        revoke_quietly(self._client, self.lease, f"leadership {self.generation}: resign")

    def __repr__(self) -> str:
        return f"<EtcdLeadership generation={self.generation} lease={self.lease:x}>"


class Election:
    """The leaderships of one store prefix (Store.try_lead, leader, members,
    end_leadership)."""

    def __init__(self, client: EtcdClient, keys: Keyspace) -> None:
        self._client = client
        self._keys = keys

    def try_lead(
        self, value: dict[str, Any], ttl: float, key: str = "leader"
    ) -> Leadership | None:
        lead_key = self._keys.lead(check_lead(key, ttl))
        lease, _ = grant(self._client, max(1, math.ceil(ttl)))
        what = f"etcd store {self._keys.prefix}"
        try:
            reply = self._client.put_if_absent(lead_key, dump_document(value).encode(), lease)
        except BaseException:
            revoke_quietly(self._client, lease, what)
            raise
        if reply.body.get("succeeded"):
            return EtcdLeadership(self._client, lease, reply.revision, lead_key)
        kv = reply.ranged(0)
        if kv and int(kv.get("lease", 0)) == lease:  # an earlier attempt won
            return EtcdLeadership(self._client, lease, int(kv["create_revision"]), lead_key)
        revoke_quietly(self._client, lease, what)
        return None

    def leader(self, key: str = "leader") -> tuple[dict[str, Any], int] | None:
        kv = self._client.get_kv(self._keys.lead(key))
        if kv is None:
            return None
        return kv_document(kv), int(kv["create_revision"])

    def members(self) -> dict[str, tuple[dict[str, Any], int]]:
        _, kvs = self._client.range(self._keys.members)
        return {
            self._keys.member_name(unb64(kv["key"])): (kv_document(kv), int(kv["create_revision"]))
            for kv in kvs
        }

    def end_leadership(self, generation: int, key: str = "leader") -> bool:
        kv = self._client.get_kv(self._keys.lead(key))
        if kv is None or int(kv["create_revision"]) != generation:
            return False  # already over, or a newer one: leave it alone
        lease = int(kv.get("lease", 0))
        if not lease:
            return False
        try:
            revoke(self._client, lease)
        except EtcdRequestError as exc:
            if exc.code == GRPC_NOT_FOUND:
                return False  # it expired (or another replica ended it) in between
            raise
        return True
