"""Talking to etcd: its HTTP/JSON gateway (`/v3/...`), failing over between members.

We use etcd3gw's `Etcd3Client` per member - session, URL building and `post()`, which
maps HTTP and connection errors to its exceptions - but not its higher-level calls,
because:

* it talks to one member; failover between the listed members is done here;
* its errors keep only text, so to know whether a failed request may have been
  applied (a write must not be blindly retried) we look at the requests exception it
  was raised from (`__context__`) and at etcd's gRPC code in the body;
* its `Watcher` has no read timeout, runs the stream in a thread pool that swallows
  the end of the stream and its errors, hands events one by one without their
  transaction, and knows nothing of compaction: the watch (watch.py) reads the stream
  itself (the same gateway call, on a member's session) and resumes on another member;
* it encodes `str` keys as latin-1: keys here are always UTF-8 bytes.

Every request is bounded: `timeout` (default 2 s) per member and attempt; a request
moves on to the next member when one is unreachable or answers that it cannot serve
(no leader, request timed out...), and passes over the members again (100 ms apart)
for up to `retry_for` (default 4 s, so a leader election - up to about two election
timeouts, 2 s with etcd's default timings - is ridden out with room to spare).  Then
it raises StoreUnavailable with one line naming what each member said.  Every request
carries the gRPC metadata `hasleader=true`, so a member cut off from its quorum says
"no leader" at once instead of waiting.

With `EtcdTLS` files the gateway is reached over https: the members are verified
against the etcd cluster's own CA and the controller presents its etcd client
certificate of that CA (etcd runs with --client-cert-auth and trusts no other CA,
docs/security.md "etcd").  The files are read again for each
new connection (requests loads them per connection), so renewed ones are used without
a restart.

A write whose attempt failed after it may have reached etcd (read timeout, lost
connection, "request timed out") is tried again too: a plain put is idempotent; a
create whose retry finds the key holding exactly its own value counts as done (the
first attempt made it); the lock and the leader key recognise their own token and
lease (`Reply.ambiguous` says an earlier attempt may have been applied).  A delete
tried again may answer False although its first attempt deleted.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions

from controller.store.base import StoreError, StoreUnavailable, load_document

with warnings.catch_warnings():
    # etcd3gw imports futurist, which imports eventlet (installed for os-ken) only to
    # see whether it monkey-patched threads; eventlet warns that it is deprecated.
    warnings.simplefilter("ignore")
    from etcd3gw import exceptions as etcd_exceptions
    from etcd3gw.client import Etcd3Client

DEFAULT_TIMEOUT = 2.0  # seconds, per member and attempt
DEFAULT_RETRY_FOR = 4.0  # seconds during which a failed request is tried again
PAGE_SIZE = 1000  # keys per range request of EtcdClient.range

# gRPC codes (in the gateway's error bodies) after which another member may serve.
_GRPC_UNAVAILABLE = {1, 4, 8, 14}  # canceled, deadline exceeded, exhausted, unavailable
GRPC_NOT_FOUND = 5
# etcd errors that mean the request was refused before anything was proposed.
_NOT_APPLIED = ("no leader", "too many requests", "not capable", "unhealthy cluster")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def kv_document(kv: dict[str, Any]) -> dict[str, Any]:
    """The JSON document stored in one key-value of a gateway answer."""
    return load_document(unb64(kv.get("value", "")))


def absent(key: bytes) -> dict[str, Any]:
    """A transaction comparison: `key` does not exist."""
    return {"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": 0}


def read(key: bytes) -> dict[str, Any]:
    """A transaction operation: read `key`."""
    return {"request_range": {"key": b64(key)}}


def error_text(body: str | None) -> tuple[int | None, str]:
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


class Failure(Exception):
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
class Reply:
    body: dict[str, Any]
    # An earlier attempt of this request failed after it may have reached etcd: for a
    # write, it may have been applied already.
    ambiguous: bool

    @property
    def revision(self) -> int:
        return int(self.body["header"]["revision"])

    def ranged(self, index: int) -> dict[str, Any] | None:
        """The key-value read by the transaction's operation `index`, if it exists."""
        kvs = self.body["responses"][index].get("response_range", {}).get("kvs") or []
        return kvs[0] if kvs else None


def endpoint(host: str, port: int) -> str:
    """HOST:PORT of a member, as a store URL writes it ([HOST]:PORT for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class EtcdTLS:
    """The files of a TLS client of etcd: the CA that signed the members'
    certificates, and this client's certificate and key (PEM)."""

    ca: Path
    cert: Path
    key: Path


class Member:
    """One etcd member: its endpoint and the gateway client that talks to it."""

    def __init__(
        self, host: str, port: int, timeout: float, tls: EtcdTLS | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.endpoint = endpoint(host, port)
        self.timeout = timeout
        self.tls = tls
        self.client = self.new_client()

    def new_client(self) -> Etcd3Client:
        session = requests.Session()
        # No proxies or netrc from the environment: etcd is reached directly (and the
        # environment lookup would cost more than the request itself).
        session.trust_env = False
        # Enough pooled connections for every thread of the controller.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=32)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["Grpc-Metadata-hasleader"] = "true"
        protocol = "http"
        if self.tls is not None:
            protocol = "https"
            session.verify = str(self.tls.ca)
            session.cert = (str(self.tls.cert), str(self.tls.key))
        # api_path given: no /version round trip (etcd >= 3.4 serves /v3/).
        return Etcd3Client(
            host=self.host, port=self.port, protocol=protocol, timeout=self.timeout,
            api_path="/v3/", session=session,
        )


def _connect_failed(exc: BaseException | None) -> bool:
    """True if a requests ConnectionError is a failure to connect (nothing was sent)."""
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError):
        inner = inner.reason
    return isinstance(inner, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)


def transport_failure(exc: requests.exceptions.RequestException) -> Failure:
    """What a requests exception says of one member: whether the request was sent (a
    write may have been applied) and whether the member was reached."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Failure("connect timed out", sent=False, connected=False)
    if isinstance(exc, requests.exceptions.Timeout):
        return Failure("request timed out", sent=True, connected=True)
    if isinstance(exc, requests.exceptions.SSLError):
        # The handshake failed (a member's certificate not from our CA, ours refused,
        # plain http on the port): nothing was sent.
        return Failure(f"TLS handshake failed ({_tls_reason(exc)})", sent=False,
                       connected=False)
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _connect_failed(exc):
            return Failure("connection refused", sent=False, connected=False)
        return Failure("connection lost", sent=True, connected=False)
    return Failure(type(exc).__name__, sent=True, connected=False)


def _tls_reason(exc: requests.exceptions.SSLError) -> str:
    """What the TLS failure says, e.g. CERTIFICATE_VERIFY_FAILED or "unknown ca"."""
    m = re.search(
        r"\[SSL: ([A-Z_]+)\]|(certificate required|unknown ca|bad certificate|"
        r"wrong version number)",
        str(exc),
        re.IGNORECASE,
    )
    return (m.group(1) or m.group(2)) if m else "handshake"


def _classify(member: Member, exc: Exception) -> Exception:
    """A Failure (try another member) or an EtcdRequestError (give up) for what an
    etcd3gw call raised (its own exceptions are raised from the requests ones, which
    tell whether the request was sent; a few requests exceptions pass through)."""
    if isinstance(exc, ValueError):  # a 200 whose body is not JSON
        return Failure("bad answer", sent=True, connected=True)
    cause = exc if isinstance(exc, requests.exceptions.RequestException) else exc.__context__
    if isinstance(cause, requests.exceptions.RequestException):
        return transport_failure(cause)
    detail = exc.detail_text if isinstance(exc, etcd_exceptions.Etcd3Exception) else str(exc)
    code, message = error_text(detail)
    if isinstance(
        exc,
        etcd_exceptions.ConnectionFailedError
        | etcd_exceptions.ConnectionTimeoutError
        | etcd_exceptions.InternalServerError,
    ) or (code in _GRPC_UNAVAILABLE):
        sent = not any(text in message for text in _NOT_APPLIED)
        return Failure(message, sent=sent, connected=True)
    return EtcdRequestError(code, message, member.endpoint)


def _unavailable(failures: dict[str, str], connected: bool) -> StoreUnavailable:
    """StoreUnavailable naming what each member said, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for endpoint, reason in failures.items():
        by_reason.setdefault(reason, []).append(endpoint)
    said = "; ".join(f"{reason} on {', '.join(eps)}" for reason, eps in by_reason.items())
    what = "no quorum" if connected else "no member reachable"
    return StoreUnavailable(f"etcd: {what} ({said})")


class EtcdClient:
    """Gateway requests to an etcd cluster, each failing over between its members; see
    the module docstring.  `name` (the store's URL) names it in errors."""

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        name: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        tls: EtcdTLS | None = None,
    ) -> None:
        if not members:
            raise ValueError("an etcd store needs at least one member")
        self.members = [Member(host, port, timeout, tls) for host, port in members]
        self.name = name
        self.retry_for = retry_for
        self.page_size = PAGE_SIZE
        self.preferred = 0  # the member that answered last
        self.closed = threading.Event()

    def close(self) -> None:
        """Refuse every request from now on (and end the retries under way)."""
        self.closed.set()

    def check_open(self) -> None:
        if self.closed.is_set():
            raise StoreError(f"store {self.name} is closed")

    def call(
        self, path: str, payload: dict[str, Any], *, retry_for: float | None = None
    ) -> Reply:
        """POST one gateway request, failing over between the members."""
        self.check_open()
        window = self.retry_for if retry_for is None else retry_for
        start = time.monotonic()
        failures: dict[str, str] = {}
        connected = False
        ambiguous = False
        while True:
            first = self.preferred
            for k in range(len(self.members)):
                i = (first + k) % len(self.members)
                member = self.members[i]
                try:
                    body = member.client.post(member.client.get_url(path), json=payload)
                except (
                    etcd_exceptions.Etcd3Exception,
                    requests.exceptions.RequestException,
                    ValueError,
                ) as exc:
                    error = _classify(member, exc)
                    if not isinstance(error, Failure):
                        raise error from exc
                    failures[member.endpoint] = error.reason
                    connected |= error.connected
                    ambiguous |= error.sent
                    continue
                self.preferred = i
                if not isinstance(body, dict):
                    raise StoreError(f"etcd: unexpected answer {body!r} ({member.endpoint})")
                return Reply(body, ambiguous)
            elapsed = time.monotonic() - start
            if elapsed >= window or self.closed.is_set():
                raise _unavailable(failures, connected)
            time.sleep(min(0.1, window - elapsed))

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]],
    ) -> Reply:
        return self.call("/kv/txn", {"compare": compare, "success": success, "failure": failure})

    def put_if_absent(self, key: bytes, value: bytes, lease: int) -> Reply:
        """Create `key` holding `value`, attached to `lease`, unless it exists; the
        failure branch reads what it holds (Reply.ranged(0))."""
        put = {"request_put": {"key": b64(key), "value": b64(value), "lease": lease}}
        return self.txn([absent(key)], [put], [read(key)])

    def get_kv(self, key: bytes) -> dict[str, Any] | None:
        kvs = self.call("/kv/range", {"key": b64(key)}).body.get("kvs", [])
        return kvs[0] if kvs else None

    def range(self, prefix: bytes) -> tuple[int, list[dict[str, Any]]]:
        """(revision, every kv under prefix ordered by key): pages of page_size keys, all
        read at the revision of the first page, so one consistent read."""
        start, end = prefix, range_end(prefix)
        revision: int | None = None
        kvs: list[dict[str, Any]] = []
        while True:
            payload: dict[str, Any] = {
                "key": b64(start),
                "range_end": b64(end),
                "limit": self.page_size,
            }
            if revision is not None:
                payload["revision"] = revision
            reply = self.call("/kv/range", payload)
            if revision is None:
                revision = reply.revision
            page = reply.body.get("kvs", [])
            kvs.extend(page)
            if not reply.body.get("more") or not page:
                return revision, kvs
            start = unb64(page[-1]["key"]) + b"\0"
