"""The etcd backend of the store: replicated controllers share one etcd cluster.

URL: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (default prefix "daolinet").  Keys:

    PREFIX/docs/KIND/KEY   a document: JSON, sorted keys, compact (dump_document)
    PREFIX/lock            exclusive(): the lock, attached to this store's session lease
    PREFIX/leader          try_lead(): the leader's value, attached to its own lease
    PREFIX/member/NAME     try_lead(key="member/NAME"): a replica's membership, the same way

`watch` covers `PREFIX/docs/` only, so it reports documents and nothing else.

Talking to etcd: etcd's HTTP/JSON gateway (`/v3/...`) through etcd3gw.  We use its
`Etcd3Client` per member - session, URL building and `post()`, which maps HTTP and
connection errors to its exceptions - but not its higher-level calls, because:

* it talks to one member; failover between the listed members is done here;
* its errors keep only text, so to know whether a failed request may have been
  applied (a write must not be blindly retried) we look at the requests exception it
  was raised from (`__context__`) and at etcd's gRPC code in the body;
* its `Watcher` has no read timeout, runs the stream in a thread pool that swallows
  the end of the stream and its errors, hands events one by one without their
  transaction, and knows nothing of compaction: `watch` here reads the stream itself
  (the same gateway call, on the client's session) and resumes on another member;
* it encodes `str` keys as latin-1: keys here are always UTF-8 bytes.

Every request is bounded: `timeout` (default 2 s) per member and attempt; a request
moves on to the next member when one is unreachable or answers that it cannot serve
(no leader, request timed out...), and passes over the members again (100 ms apart)
for up to `retry_for` (default 4 s, so a leader election - up to about two election
timeouts, 2 s with etcd's default timings - is ridden out with room to spare).  Then
it raises StoreUnavailable with one line naming what each member said.  Every request
carries the gRPC metadata `hasleader=true`, so a member cut off from its quorum says
"no leader" at once instead of waiting.

A write whose attempt failed after it may have reached etcd (read timeout, lost
connection, "request timed out") is tried again too: a plain put is idempotent; a
create whose retry finds the key holding exactly its own value counts as done (the
first attempt made it); the lock and the leader key recognise their own token and
lease.  A delete tried again may answer False although its first attempt deleted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions

with warnings.catch_warnings():
    # etcd3gw imports futurist, which imports eventlet (installed for os-ken) only to
    # see whether it monkey-patched threads; eventlet warns that it is deprecated.
    warnings.simplefilter("ignore")
    from etcd3gw import exceptions as etcd_exceptions
    from etcd3gw.client import Etcd3Client

from controller.store.base import (
    Documents,
    Leadership,
    StoreConflict,
    StoreError,
    StoreEvent,
    StoreUnavailable,
    WatchCallback,
    check_lead_key,
    dump_document,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "daolinet"
DEFAULT_TIMEOUT = 2.0  # seconds, per member and attempt
DEFAULT_RETRY_FOR = 4.0  # seconds during which a failed request is tried again
DEFAULT_LOCK_TTL = 3  # seconds: the session lease behind exclusive()
URL_FORM = "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"

_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?))"
    r":(?P<port>[0-9]{1,5})$"
)
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+$")
# gRPC codes (in the gateway's error bodies) after which another member may serve.
_GRPC_UNAVAILABLE = {1, 4, 8, 14}  # canceled, deadline exceeded, exhausted, unavailable
_GRPC_NOT_FOUND = 5
# etcd errors that mean the request was refused before anything was proposed.
_NOT_APPLIED = ("no leader", "too many requests", "not capable", "unhealthy cluster")
# How long a watch stream may stay silent before it is re-established (it resumes
# after the last delivered revision, so this costs nothing but a request).
_WATCH_IDLE = 5.0


def parse_etcd_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """(members as (host, port), prefix) of an etcd store URL; ValueError if malformed."""
    if not url.startswith("etcd://"):
        raise ValueError(f"malformed store URL {url!r}: expected {URL_FORM}")
    members, slash, prefix = url[len("etcd://") :].partition("/")
    if not slash or prefix == "":
        prefix = DEFAULT_PREFIX
    if not _PREFIX.match(prefix):
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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _error_text(body: str | None) -> tuple[int | None, str]:
    """(gRPC code, message) of a gateway error body."""
    try:
        doc = json.loads(body or "")
    except ValueError:
        lines = (body or "").strip().splitlines()
        return None, lines[0] if lines else "no answer"
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):  # stream errors
        doc = doc["error"]
    if not isinstance(doc, dict):
        return None, str(doc)
    message = str(doc.get("message") or doc.get("error") or doc)
    code = doc.get("code", doc.get("grpc_code"))
    return (int(code) if isinstance(code, int | str) and str(code).isdigit() else None), message


class _Failure(Exception):
    """One member could not serve one request; another member may."""

    def __init__(self, reason: str, *, sent: bool, connected: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent  # the request may have reached etcd (a write may be applied)
        self.connected = connected  # the member answered or at least accepted the request


class EtcdRequestError(StoreError):
    """etcd refused a request (not a failure of availability): bad request, no such
    lease...  `code` is etcd's gRPC code."""

    def __init__(self, code: int | None, message: str, endpoint: str) -> None:
        super().__init__(f"etcd: {message} ({endpoint})")
        self.code = code
        self.message = message


@dataclass
class _Reply:
    body: dict[str, Any]
    # An earlier attempt of this request failed after it may have reached etcd: for a
    # write, it may have been applied already.
    ambiguous: bool

    @property
    def revision(self) -> int:
        return int(self.body["header"]["revision"])


class _Member:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.timeout = timeout
        self.client = self.new_client()

    def new_client(self) -> Etcd3Client:
        session = requests.Session()
        # No proxies or netrc from the environment: etcd is reached directly (and the
        # environment lookup would cost more than the request itself).
        session.trust_env = False
        # Enough pooled connections for every thread of the controller.
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        session.headers["Grpc-Metadata-hasleader"] = "true"
        # api_path given: no /version round trip (etcd >= 3.4 serves /v3/).
        return Etcd3Client(
            host=self.host, port=self.port, timeout=self.timeout, api_path="/v3/", session=session
        )


def _connect_failed(exc: BaseException | None) -> bool:
    """True if a requests ConnectionError is a failure to connect (nothing was sent)."""
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError):
        inner = inner.reason
    return isinstance(inner, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)


def _classify(member: _Member, exc: Exception) -> Exception:
    """A _Failure (try another member) or an EtcdRequestError (give up) for what an
    etcd3gw call raised (its own exceptions are raised from the requests ones, which
    tell whether the request was sent; a few requests exceptions pass through)."""
    if isinstance(exc, ValueError):  # a 200 whose body is not JSON
        return _Failure("bad answer", sent=True, connected=True)
    cause = exc if isinstance(exc, requests.exceptions.RequestException) else exc.__context__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return _Failure("connect timed out", sent=False, connected=False)
    if isinstance(cause, requests.exceptions.Timeout):
        return _Failure("request timed out", sent=True, connected=True)
    if isinstance(cause, requests.exceptions.ConnectionError):
        if _connect_failed(cause):
            return _Failure("connection refused", sent=False, connected=False)
        return _Failure("connection lost", sent=True, connected=False)
    if isinstance(cause, requests.exceptions.RequestException):
        return _Failure(type(cause).__name__, sent=True, connected=False)
    detail = exc.detail_text if isinstance(exc, etcd_exceptions.Etcd3Exception) else str(exc)
    code, message = _error_text(detail)
    if isinstance(
        exc,
        etcd_exceptions.ConnectionFailedError
        | etcd_exceptions.ConnectionTimeoutError
        | etcd_exceptions.InternalServerError,
    ) or (code in _GRPC_UNAVAILABLE):
        sent = not any(text in message for text in _NOT_APPLIED)
        return _Failure(message, sent=sent, connected=True)
    return EtcdRequestError(code, message, member.endpoint)


def _unavailable(failures: dict[str, str], connected: bool) -> StoreUnavailable:
    """StoreUnavailable naming what each member said, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for endpoint, reason in failures.items():
        by_reason.setdefault(reason, []).append(endpoint)
    said = "; ".join(f"{reason} on {', '.join(eps)}" for reason, eps in by_reason.items())
    what = "no quorum" if connected else "no member reachable"
    return StoreUnavailable(f"etcd: {what} ({said})")


@dataclass
class _Held:
    """exclusive() held by one thread: the lock key's create_revision fences writes."""

    revision: int
    depth: int = 1


class EtcdLeadership:
    """A leadership won by EtcdStore.try_lead: the leader key, attached to its lease."""

    def __init__(
        self, store: EtcdStore, lease: int, generation: int, ttl: int, key: bytes
    ) -> None:
        self.generation = generation
        self.lease = lease
        self.key = key
        self.ttl = ttl  # as granted by etcd (whole seconds, at least etcd's minimum)
        self._store = store
        self._lost = False
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        with self._lock:
            if self._lost:
                return False
            try:
                reply = self._store._call("/lease/keepalive", {"ID": self.lease})
                ttl = int(reply.body.get("result", {}).get("TTL", 0))
                kv = self._store._get_kv(self.key) if ttl > 0 else None
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
        try:
            # Revoking the lease deletes the leader key with it.
            self._store._call("/kv/lease/revoke", {"ID": self.lease}, retry_for=0.0)
        except Exception as exc:  # best effort: the lease expires by itself
            log.info("leadership %d: resign: %s", self.generation, exc)

    def __repr__(self) -> str:
        return f"<EtcdLeadership generation={self.generation} lease={self.lease:x}>"


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
    ) -> None:
        if not members:
            raise ValueError("an etcd store needs at least one member")
        if not _PREFIX.match(prefix):
            raise ValueError(f"etcd store prefix {prefix!r} must be one word")
        self.prefix = prefix
        self.timeout = timeout
        self.retry_for = retry_for
        self.lock_ttl = lock_ttl
        self.page_size = 1000  # keys per range request in list() and snapshot()
        self._members = [_Member(host, port, timeout) for host, port in members]
        self._preferred = 0  # the member that answered last
        self._docs = f"{prefix}/docs/".encode()
        self._lock_key = f"{prefix}/lock".encode()
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._closed = threading.Event()
        self._local = threading.Lock()  # exclusive() among this object's threads
        self._tls = threading.local()
        self._session_guard = threading.Lock()
        self._session: int | None = None  # the lease of the lock key
        self._keepalive: threading.Thread | None = None
        self._watches: list[_Watch] = []
        self._watches_guard = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> EtcdStore:
        members, prefix = parse_etcd_url(url)
        return cls(members, prefix, **options)

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self._members) + "/" + self.prefix

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self._members]

    def __repr__(self) -> str:
        return f"EtcdStore({self.url!r})"

    # --- requests ---------------------------------------------------------------------

    def _call(
        self, path: str, payload: dict[str, Any], *, retry_for: float | None = None
    ) -> _Reply:
        """POST one gateway request, failing over between the members."""
        if self._closed.is_set():
            raise StoreError(f"store {self.url} is closed")
        window = self.retry_for if retry_for is None else retry_for
        start = time.monotonic()
        failures: dict[str, str] = {}
        connected = False
        ambiguous = False
        while True:
            first = self._preferred
            for k in range(len(self._members)):
                i = (first + k) % len(self._members)
                member = self._members[i]
                try:
                    body = member.client.post(member.client.get_url(path), json=payload)
                except (
                    etcd_exceptions.Etcd3Exception,
                    requests.exceptions.RequestException,
                    ValueError,
                ) as exc:
                    error = _classify(member, exc)
                    if not isinstance(error, _Failure):
                        raise error from exc
                    failures[member.endpoint] = error.reason
                    connected |= error.connected
                    ambiguous |= error.sent
                    continue
                self._preferred = i
                if not isinstance(body, dict):
                    raise StoreError(f"etcd: unexpected answer {body!r} ({member.endpoint})")
                return _Reply(body, ambiguous)
            elapsed = time.monotonic() - start
            if elapsed >= window or self._closed.is_set():
                raise _unavailable(failures, connected)
            time.sleep(min(0.1, window - elapsed))

    def _txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]],
    ) -> _Reply:
        return self._call("/kv/txn", {"compare": compare, "success": success, "failure": failure})

    def _get_kv(self, key: bytes) -> dict[str, Any] | None:
        kvs = self._call("/kv/range", {"key": _b64(key)}).body.get("kvs", [])
        return kvs[0] if kvs else None

    def _range(self, prefix: bytes) -> tuple[int, list[dict[str, Any]]]:
        """(revision, every kv under prefix ordered by key): pages of page_size keys, all
        read at the revision of the first page, so one consistent read."""
        start, end = prefix, _range_end(prefix)
        revision: int | None = None
        kvs: list[dict[str, Any]] = []
        while True:
            payload: dict[str, Any] = {
                "key": _b64(start),
                "range_end": _b64(end),
                "limit": self.page_size,
            }
            if revision is not None:
                payload["revision"] = revision
            reply = self._call("/kv/range", payload)
            if revision is None:
                revision = reply.revision
            page = reply.body.get("kvs", [])
            kvs.extend(page)
            if not reply.body.get("more") or not page:
                return revision, kvs
            start = _unb64(page[-1]["key"]) + b"\0"

    def _doc_key(self, kind: str, key: str) -> bytes:
        if not kind or "/" in kind:
            raise ValueError(f"document kind {kind!r} must be a non-empty word without '/'")
        return self._docs + f"{kind}/{key}".encode()

    def _split_doc_key(self, raw: bytes) -> tuple[str, str]:
        kind, _, key = raw[len(self._docs) :].decode().partition("/")
        return kind, key

    # --- documents --------------------------------------------------------------------

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        kv = self._get_kv(self._doc_key(kind, key))
        if kv is None:
            return None
        value: dict[str, Any] = json.loads(_unb64(kv.get("value", "")))
        return value

    def list(self, kind: str) -> list[dict[str, Any]]:
        _, kvs = self._range(self._doc_key(kind, ""))
        return [json.loads(_unb64(kv.get("value", ""))) for kv in kvs]

    def snapshot(self) -> tuple[int, Documents]:
        revision, kvs = self._range(self._docs)
        docs: Documents = {}
        for kv in kvs:
            kind, _ = self._split_doc_key(_unb64(kv["key"]))
            docs.setdefault(kind, []).append(json.loads(_unb64(kv.get("value", ""))))
        return revision, docs

    def revision(self) -> int:
        # A linearizable range (the gateway's default) answers with the current revision.
        payload = {"key": _b64(self._docs), "range_end": _b64(_range_end(self._docs))}
        return self._call("/kv/range", {**payload, "count_only": True}).revision

    def _fence(self) -> _Held | None:
        held: _Held | None = getattr(self._tls, "held", None)
        return held

    def _lock_compare(self, held: _Held) -> dict[str, Any]:
        return {
            "key": _b64(self._lock_key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": held.revision,
        }

    def _lost(self, held: _Held) -> StoreUnavailable:
        return StoreUnavailable(
            f"etcd: lost exclusive access to the store {self.url} (the lock of revision "
            f"{held.revision} expired or was taken over); nothing was written"
        )

    def put(self, kind: str, key: str, value: dict[str, Any], *, create: bool = False) -> None:
        doc_key = self._doc_key(kind, key)
        text = dump_document(value).encode()
        held = self._fence()
        put = {"request_put": {"key": _b64(doc_key), "value": _b64(text)}}
        if held is None and not create:
            self._call("/kv/put", put["request_put"])
            return
        compare: list[dict[str, Any]] = []
        failure: list[dict[str, Any]] = []
        if held is not None:
            compare.append(self._lock_compare(held))
            failure.append({"request_range": {"key": _b64(self._lock_key)}})
        if create:
            compare.append(
                {"key": _b64(doc_key), "target": "VERSION", "result": "EQUAL", "version": 0}
            )
            failure.append({"request_range": {"key": _b64(doc_key)}})
        reply = self._txn(compare, [put], failure)
        if reply.body.get("succeeded"):
            return
        found = [
            (r.get("response_range", {}).get("kvs") or [None])[0]
            for r in reply.body.get("responses", [])
        ]
        if held is not None:
            lock_kv = found.pop(0)
            if lock_kv is None or int(lock_kv.get("create_revision", 0)) != held.revision:
                raise self._lost(held)
        doc_kv = found.pop(0) if found else None
        if reply.ambiguous and doc_kv is not None and _unb64(doc_kv.get("value", "")) == text:
            return  # an earlier attempt of this very request created it
        raise StoreConflict(kind, key)

    def delete(self, kind: str, key: str) -> bool:
        doc_key = self._doc_key(kind, key)
        held = self._fence()
        if held is None:
            reply = self._call("/kv/deleterange", {"key": _b64(doc_key)})
            return int(reply.body.get("deleted", 0)) > 0
        reply = self._txn(
            [self._lock_compare(held)],
            [{"request_delete_range": {"key": _b64(doc_key)}}],
            [],
        )
        if not reply.body.get("succeeded"):
            raise self._lost(held)
        deleted = reply.body["responses"][0].get("response_delete_range", {}).get("deleted", 0)
        return int(deleted) > 0

    # --- watch ------------------------------------------------------------------------

    def watch(
        self,
        after: int,
        callback: WatchCallback,
        on_error: Callable[[StoreError], None] | None = None,
    ) -> None:
        if self._closed.is_set():
            raise StoreError(f"store {self.url} is closed")
        w = _Watch(self, after, callback, on_error)
        with self._watches_guard:
            self._watches.append(w)
        w.start()

    def _event(self, raw: dict[str, Any]) -> StoreEvent | None:
        kv = raw["kv"]
        kind, key = self._split_doc_key(_unb64(kv["key"]))
        revision = int(kv["mod_revision"])
        if raw.get("type") == "DELETE":
            return StoreEvent(kind, key, None, revision)
        try:
            value = json.loads(_unb64(kv.get("value", "")))
        except ValueError:
            log.error("watch: %s/%s at revision %d is not JSON; ignored", kind, key, revision)
            return None
        return StoreEvent(kind, key, value, revision)

    # --- exclusive --------------------------------------------------------------------

    def _session_lease(self) -> int:
        """The lease of this store's lock key, granted on first use and kept alive by a
        background thread every lock_ttl / 3 seconds."""
        with self._session_guard:
            if self._session is None:
                reply = self._call("/lease/grant", {"TTL": self.lock_ttl, "ID": 0})
                self._session = int(reply.body["ID"])
            if self._keepalive is None:
                self._keepalive = threading.Thread(
                    target=self._keep_session, name=f"etcd-lease {self.prefix}", daemon=True
                )
                self._keepalive.start()
            return self._session

    def _keep_session(self) -> None:
        while not self._closed.wait(max(self.lock_ttl / 3, 0.2)):
            lease = self._session
            if lease is None:
                continue
            try:
                reply = self._call("/lease/keepalive", {"ID": lease})
            except StoreError as exc:
                log.warning("etcd store %s: lock lease keepalive failed: %s", self.prefix, exc)
                continue
            if int(reply.body.get("result", {}).get("TTL", 0)) <= 0:
                log.warning("etcd store %s: lock lease %x expired", self.prefix, lease)
                with self._session_guard:
                    if self._session == lease:
                        self._session = None

    def _drop_session(self, lease: int) -> None:
        with self._session_guard:
            if self._session == lease:
                self._session = None

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 5.0) -> Iterator[None]:
        held = self._fence()
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
                f"etcd: no exclusive access to the store {self.url} within {timeout:g} s"
                " (another thread of this process holds it)"
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

    def _acquire(self, deadline: float, timeout: float) -> _Held:
        token = uuid.uuid4().hex
        value = dump_document({"owner": self._owner, "token": token}).encode()
        delay = 0.005
        while True:
            lease = self._session_lease()
            try:
                reply = self._txn(
                    [
                        {
                            "key": _b64(self._lock_key),
                            "target": "VERSION",
                            "result": "EQUAL",
                            "version": 0,
                        }
                    ],
                    [
                        {
                            "request_put": {
                                "key": _b64(self._lock_key),
                                "value": _b64(value),
                                "lease": lease,
                            }
                        }
                    ],
                    [{"request_range": {"key": _b64(self._lock_key)}}],
                )
            except EtcdRequestError as exc:
                if exc.code != _GRPC_NOT_FOUND:  # "requested lease not found"
                    self._drop_session(lease)  # the put may have been applied: let it expire
                    raise
                self._drop_session(lease)
                continue
            except StoreError:
                self._drop_session(lease)  # the put may have been applied: let it expire
                raise
            if reply.body.get("succeeded"):
                return _Held(reply.revision)
            kvs = reply.body["responses"][0].get("response_range", {}).get("kvs") or []
            holder = "?"
            if kvs:
                current = _unb64(kvs[0].get("value", ""))
                if current == value:  # an earlier attempt of this very request won
                    return _Held(int(kvs[0]["create_revision"]))
                with contextlib.suppress(ValueError, AttributeError):
                    holder = json.loads(current).get("owner", "?")
            else:
                continue  # released in between: try again at once
            now = time.monotonic()
            if now >= deadline:
                raise StoreUnavailable(
                    f"etcd: no exclusive access to the store {self.url} within {timeout:g} s"
                    f" (held by {holder})"
                )
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)

    def _release(self, held: _Held) -> None:
        try:
            self._txn(
                [self._lock_compare(held)],
                [{"request_delete_range": {"key": _b64(self._lock_key)}}],
                [],
            )
        except StoreError as exc:
            # The lock key lives on this store's session lease, which the keepalive
            # thread would renew for ever: give the session up, so the lease (and the
            # lock with it) expires within lock_ttl, and take a new one next time.
            log.warning("etcd store %s: releasing the lock failed (%s); it expires with "
                        "its lease within %d s", self.prefix, exc, self.lock_ttl)
            with self._session_guard:
                self._session = None

    # --- leader election --------------------------------------------------------------

    def _lead_key(self, key: str) -> bytes:
        return f"{self.prefix}/{check_lead_key(key)}".encode()

    def try_lead(
        self, value: dict[str, Any], ttl: float, key: str = "leader"
    ) -> Leadership | None:
        if ttl <= 0:
            raise ValueError(f"leadership ttl must be positive, not {ttl!r}")
        lead_key = self._lead_key(key)
        grant = self._call("/lease/grant", {"TTL": max(1, math.ceil(ttl)), "ID": 0})
        lease, granted = int(grant.body["ID"]), int(grant.body.get("TTL", 0))
        try:
            reply = self._txn(
                [
                    {
                        "key": _b64(lead_key),
                        "target": "VERSION",
                        "result": "EQUAL",
                        "version": 0,
                    }
                ],
                [
                    {
                        "request_put": {
                            "key": _b64(lead_key),
                            "value": _b64(dump_document(value).encode()),
                            "lease": lease,
                        }
                    }
                ],
                [{"request_range": {"key": _b64(lead_key)}}],
            )
        except BaseException:
            self._revoke(lease)
            raise
        if reply.body.get("succeeded"):
            return EtcdLeadership(self, lease, reply.revision, granted, lead_key)
        kvs = reply.body["responses"][0].get("response_range", {}).get("kvs") or []
        if kvs and int(kvs[0].get("lease", 0)) == lease:  # an earlier attempt won
            return EtcdLeadership(
                self, lease, int(kvs[0]["create_revision"]), granted, lead_key
            )
        self._revoke(lease)
        return None

    def leader(self, key: str = "leader") -> tuple[dict[str, Any], int] | None:
        kv = self._get_kv(self._lead_key(key))
        if kv is None:
            return None
        value: dict[str, Any] = json.loads(_unb64(kv.get("value", "")))
        return value, int(kv["create_revision"])

    def members(self) -> dict[str, tuple[dict[str, Any], int]]:
        prefix = f"{self.prefix}/member/".encode()
        _, kvs = self._range(prefix)
        out: dict[str, tuple[dict[str, Any], int]] = {}
        for kv in kvs:
            name = _unb64(kv["key"])[len(prefix):].decode()
            out[name] = (json.loads(_unb64(kv.get("value", ""))), int(kv["create_revision"]))
        return out

    def end_leadership(self, generation: int, key: str = "leader") -> bool:
        kv = self._get_kv(self._lead_key(key))
        if kv is None or int(kv["create_revision"]) != generation:
            return False  # already over, or a newer one: leave it alone
        lease = int(kv.get("lease", 0))
        if not lease:
            return False
        try:
            self._call("/kv/lease/revoke", {"ID": lease}, retry_for=0.0)
        except EtcdRequestError as exc:
            if exc.code == _GRPC_NOT_FOUND:
                return False  # it expired (or another replica ended it) in between
            raise
        return True

    def _revoke(self, lease: int) -> None:
        try:
            self._call("/kv/lease/revoke", {"ID": lease}, retry_for=0.0)
        except Exception as exc:  # it expires by itself
            log.info("etcd store %s: revoking lease %x: %s", self.prefix, lease, exc)

    # --- close ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed.is_set():
            return
        with self._session_guard:
            lease, self._session = self._session, None
        if lease is not None:  # frees the lock if a thread still holds it
            self._revoke(lease)
        self._closed.set()
        with self._watches_guard:
            watches, self._watches = self._watches, []
        for w in watches:
            w.stop()
        if self._keepalive is not None:
            self._keepalive.join(1.0)


class _Watch:
    """One watch(): a thread reading the gateway's watch stream of PREFIX/docs/, from
    one member at a time, resuming after the last delivered revision."""

    def __init__(
        self,
        store: EtcdStore,
        after: int,
        callback: WatchCallback,
        on_error: Callable[[StoreError], None] | None,
    ) -> None:
        self.store = store
        self.last = after  # the last revision delivered
        self.callback = callback
        self.on_error = on_error
        self._stopped = threading.Event()
        self._response: requests.Response | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"etcd-watch {store.prefix}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            _shutdown(response)
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _run(self) -> None:
        store = self.store
        n = len(store._members)
        i = store._preferred
        failures = 0
        backoff = 0.05
        while not self._stopped.is_set():
            member = store._members[i % n]
            try:
                self._stream(member)
                failures, backoff = 0, 0.05  # it worked, then ended: reconnect at once
            except _Idle:
                failures, backoff = 0, 0.05
                i += 1  # silent: maybe stopped or cut off; the next member will tell
                continue
            except _Gap as gap:
                log.error("etcd watch %s: %s", store.prefix, gap)
                if self.on_error is not None and not self._stopped.is_set():
                    with contextlib.suppress(Exception):
                        self.on_error(StoreUnavailable(str(gap)))
                return
            except _Failure as f:
                if not self._stopped.is_set():
                    log.info("etcd watch %s: %s on %s", store.prefix, f.reason, member.endpoint)
                failures += 1
            except Exception:  # a bug: say so, keep watching
                log.exception("etcd watch %s on %s", store.prefix, member.endpoint)
                failures += 1
            i += 1
            if failures and failures % n == 0:  # every member failed: wait a little
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 1.0)

    def _stream(self, member: _Member) -> None:
        store = self.store
        client = member.new_client()
        request = {
            "create_request": {
                "key": _b64(store._docs),
                "range_end": _b64(_range_end(store._docs)),
                "start_revision": self.last + 1,
            }
        }
        try:
            try:
                response = client.session.post(
                    client.get_url("/watch"),
                    json=request,
                    stream=True,
                    timeout=(member.timeout, _WATCH_IDLE),
                )
            except requests.exceptions.RequestException as exc:
                raise _Failure(_classify_stream(exc), sent=False, connected=False) from exc
            self._response = response
            if self._stopped.is_set():
                return
            if response.status_code != 200:
                _, message = _error_text(response.text)
                raise _Failure(message, sent=False, connected=True)
            buffer = b""
            try:
                for chunk in response.iter_content(chunk_size=None):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            self._message(json.loads(line))
                        if self._stopped.is_set():
                            return
            except requests.exceptions.RequestException as exc:
                if self._stopped.is_set():
                    return
                reason = _classify_stream(exc)
                if reason == "silent":
                    raise _Idle() from exc
                raise _Failure(reason, sent=False, connected=True) from exc
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                if self._stopped.is_set():
                    return
                raise _Failure(f"stream broken: {exc}", sent=False, connected=True) from exc
            raise _Failure("stream ended", sent=False, connected=True)
        finally:
            self._response = None
            client.session.close()

    def _message(self, message: dict[str, Any]) -> None:
        if "error" in message:
            _, text = _error_text(json.dumps(message))
            raise _Failure(text, sent=False, connected=True)
        result = message.get("result", {})
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                raise _Gap(
                    f"etcd: the history after revision {self.last} was compacted (up to "
                    f"{compacted}): the watch cannot go on without a gap"
                )
            raise _Failure(
                result.get("cancel_reason") or "watch canceled", sent=False, connected=True
            )
        # Group by revision: the events of one transaction share it, and etcd never
        # splits a revision between two responses.
        groups: list[tuple[int, list[StoreEvent]]] = []
        for raw in result.get("events", []):
            revision = int(raw["kv"]["mod_revision"])
            if revision <= self.last:
                continue  # already delivered (a resumed stream starts after it anyway)
            if not groups or groups[-1][0] != revision:
                groups.append((revision, []))
            event = self.store._event(raw)
            if event is not None:
                groups[-1][1].append(event)
        for revision, events in groups:
            if self._stopped.is_set():
                return
            if events:
                try:
                    self.callback(events)
                except Exception:
                    log.exception("etcd watch %s: the callback failed", self.store.prefix)
            self.last = revision


class _Gap(Exception):
    """The watch cannot resume without skipping revisions."""


class _Idle(Exception):
    """The watch stream said nothing for _WATCH_IDLE seconds."""


def _classify_stream(exc: requests.exceptions.RequestException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout) or "timed out" in str(exc):
        return "silent"
    if _connect_failed(exc):
        return "connection refused"
    return "connection lost"


def _shutdown(response: requests.Response) -> None:
    """Wake a thread blocked reading a streaming response (as etcd3gw's Watcher does):
    shut its socket down."""
    with contextlib.suppress(Exception):
        fp: Any = response.raw._fp  # http.client.HTTPResponse
        sock = socket.fromfd(fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    with contextlib.suppress(Exception):
        response.close()
