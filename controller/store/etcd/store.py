"""The etcd backend of the store (`etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`):
replicated controllers share one etcd cluster.

EtcdStore composes the mechanisms of this package: requests and failover (client.py),
the key layout (keys.py), the lock and fenced writes (lock.py, on the session lease of
lease.py), leader election (election.py) and the watch (watch.py); here are the
documents themselves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from controller.store.base import (
    Documents,
    Items,
    Leadership,
    StoreConflict,
    StoreError,
    WatchCallback,
    dump_document,
)
from controller.store.batch import Batches, Write
from controller.store.etcd.client import (
    DEFAULT_RETRY_FOR,
    DEFAULT_TIMEOUT,
    EtcdClient,
    EtcdTLS,
    absent,
    b64,
    endpoint,
    kv_document,
    range_end,
    read,
    unb64,
)
from controller.store.etcd.election import Election
from controller.store.etcd.keys import DEFAULT_PREFIX, PREFIX_WORD, Keyspace
from controller.store.etcd.lease import DEFAULT_LOCK_TTL, SessionLease
from controller.store.etcd.lock import EtcdLock
from controller.store.etcd.watch import Watch

URL_FORM = "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"

_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?))"
    r":(?P<port>[0-9]{1,5})$"
)


def parse_etcd_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """(members as (host, port), prefix) of an etcd store URL; ValueError if malformed."""
    if not url.startswith("etcd://"):
        raise ValueError(f"malformed store URL {url!r}: expected {URL_FORM}")
    members, slash, prefix = url[len("etcd://") :].partition("/")
    if not slash or prefix == "":
        prefix = DEFAULT_PREFIX
    if not PREFIX_WORD.match(prefix):
        raise ValueError(
            f"store URL {url!r}: the prefix {prefix!r} must be one word of letters, digits,"
            f" '.', '_' or '-': expected {URL_FORM}"
        )
    if not members:
        raise ValueError(f"store URL {url!r} names no etcd member: expected {URL_FORM}")
    endpoints: list[tuple[str, int]] = []
    for item in members.split(","):
        m = _HOST_PORT.match(item)
        if m is None:
            raise ValueError(f"store URL {url!r}: {item!r} is not HOST:PORT: expected {URL_FORM}")
        port = int(m["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"store URL {url!r}: port {port} of {item!r} is not in 1-65535")
        host = m["v6"] or m["host"]
        if (host, port) in endpoints:
            raise ValueError(f"store URL {url!r} lists {item!r} twice: expected {URL_FORM}")
        endpoints.append((host, port))
    return endpoints, prefix


class EtcdStore:
    """Store on an etcd cluster; see the module docstring."""

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        prefix: str = DEFAULT_PREFIX,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        lock_ttl: int = DEFAULT_LOCK_TTL,
        tls: EtcdTLS | None = None,
    ) -> None:
        self.url = "etcd://" + ",".join(endpoint(h, p) for h, p in members) + "/" + prefix
        self.client = EtcdClient(
            members, self.url, timeout=timeout, retry_for=retry_for, tls=tls
        )
        self.keys = Keyspace(prefix)
        self.session = SessionLease(self.client, lock_ttl, prefix)
        self.lock = EtcdLock(self.client, self.keys, self.session)
        self.election = Election(self.client, self.keys)
        self._watches: list[Watch] = []
        self._watches_guard = threading.Lock()
        self._batches = Batches(self._commit)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdStore:
        members, prefix = parse_etcd_url(url)
        return cls(members, prefix, **options)

    def __repr__(self) -> str:
        return f"EtcdStore({self.url!r})"

    # --- documents --------------------------------------------------------------------

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._batches.get(kind, key, lambda: self._get(kind, key))[1]

    def _get(self, kind: str, key: str) -> dict[str, Any] | None:
        kv = self.client.get_kv(self.keys.doc(kind, key))
        return None if kv is None else kv_document(kv)

    def list(self, kind: str) -> list[dict[str, Any]]:
        _, kvs = self.client.range(self.keys.doc(kind, ""))
        return [kv_document(kv) for kv in kvs]

    def items(self, kind: str) -> Items:
        _, kvs = self.client.range(self.keys.doc(kind, ""))
        return [(self.keys.split_doc(unb64(kv["key"]))[1], kv_document(kv)) for kv in kvs]

    def snapshot(self) -> tuple[int, Documents]:
        revision, kvs = self.client.range(self.keys.docs)
        docs: Documents = {}
        for kv in kvs:
            kind, _ = self.keys.split_doc(unb64(kv["key"]))
            docs.setdefault(kind, []).append(kv_document(kv))
        return revision, docs

    def revision(self) -> int:
        # A linearizable range (the gateway's default) answers with the current revision.
        docs = self.keys.docs
        payload = {"key": b64(docs), "range_end": b64(range_end(docs)), "count_only": True}
        return self.client.call("/kv/range", payload).revision

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        self.client.check_open()
        if self._batches.put(kind, key, value, create, lambda: self._get(kind, key)):
            return
        if self.lock.held() is None and not create:
            text = dump_document(value).encode()
            self.client.call("/kv/put", {"key": b64(self.keys.doc(kind, key)), "value": b64(text)})
            return
        self._commit([Write(kind, key, value, create)])

    def delete(self, kind: str, key: str) -> bool:
        self.client.check_open()
        existed = self._batches.delete(kind, key, lambda: self._get(kind, key))
        if existed is not None:
            return existed
        doc_key = self.keys.doc(kind, key)
        held = self.lock.held()
        if held is None:
            reply = self.client.call("/kv/deleterange", {"key": b64(doc_key)})
            return int(reply.body.get("deleted", 0)) > 0
        reply = self.client.txn(
            [self.lock.compare(held)],
            [{"request_delete_range": {"key": b64(doc_key)}}],
            [],
        )
        if not reply.body.get("succeeded"):
            raise self.lock.lost(held)
        deleted = reply.body["responses"][0].get("response_delete_range", {}).get("deleted", 0)
        return int(deleted) > 0

    def transaction(self) -> AbstractContextManager[None]:
        return self._batches.transaction()

    def _commit(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in one etcd txn (one revision, all or nothing): compared on the
        lock if this thread holds it (fencing) and on the absence of every created key;
        if it fails, what it read says why (lock lost, or which key was taken)."""
        held = self.lock.held()
        compare: list[dict[str, Any]] = []
        failure: list[dict[str, Any]] = []
        if held is not None:
            compare.append(self.lock.compare(held))
            failure.append(read(self.keys.lock))
        success: list[dict[str, Any]] = []
        created: list[tuple[Write, bytes]] = []  # (a put create=True, its stored text)
        for w in writes:
            doc_key = self.keys.doc(w.kind, w.key)
            text = b"" if w.value is None else dump_document(w.value).encode()
            if w.value is None:
                success.append({"request_delete_range": {"key": b64(doc_key)}})
            else:
                success.append({"request_put": {"key": b64(doc_key), "value": b64(text)}})
            if w.create:
                compare.append(absent(doc_key))
                failure.append(read(doc_key))
                created.append((w, text))
        reply = self.client.txn(compare, success, failure)
        if reply.body.get("succeeded"):
            return
        if held is not None:
            self.lock.check(held, reply.ranged(0))
        first = 1 if held is not None else 0
        found = [reply.ranged(first + i) for i in range(len(created))]
        if reply.ambiguous and all(
            kv is not None and unb64(kv.get("value", "")) == text
            for (_, text), kv in zip(created, found, strict=True)
        ):
            return  # an earlier attempt of this very request applied it
        for (w, _), kv in zip(created, found, strict=True):
            if kv is not None:
                raise StoreConflict(w.kind, w.key)
        raise StoreConflict(writes[0].kind, writes[0].key)  # pragma: no cover

    # --- watch, exclusive, leadership: the mechanisms of this package -----------------

    def watch(
        self,
        after: int,
        callback: WatchCallback,
        on_error: Callable[[StoreError], None] | None = None,
    ) -> None:
        self.client.check_open()
        w = Watch(self.client, self.keys, after, callback, on_error)
        with self._watches_guard:
            self._watches.append(w)
        w.start()

    def exclusive(self, timeout: float = 5.0) -> AbstractContextManager[None]:
        return self.lock.exclusive(timeout)

    def try_lead(
        self, value: dict[str, Any], ttl: float, key: str = "leader"
    ) -> Leadership | None:
        return self.election.try_lead(value, ttl, key)

    def end_leadership(self, generation: int, key: str = "leader") -> bool:
        return self.election.end_leadership(generation, key)

    def leader(self, key: str = "leader") -> tuple[dict[str, Any], int] | None:
        return self.election.leader(key)

    def members(self) -> dict[str, tuple[dict[str, Any], int]]:
        return self.election.members()

    def close(self) -> None:
        if self.client.closed.is_set():
            return
        self.session.revoke()  # frees the lock if a thread still holds it
        self.client.close()
        with self._watches_guard:
            watches, self._watches = self._watches, []
        for w in watches:
            w.stop()
        self.session.join(1.0)
