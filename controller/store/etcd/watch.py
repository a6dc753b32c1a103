"""Store.watch on etcd: a thread reads the gateway's watch stream of PREFIX/docs/ from one
member at a time and hands each revision's events to the callback; it resumes on the
next member after the last delivered revision, so it never skips or repeats one, and
stops (calling on_error) only when etcd compacted the history it needs."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions

from controller.store.base import StoreError, StoreEvent, StoreUnavailable, WatchCallback
from controller.store.etcd.client import (
    EtcdClient,
    Failure,
    Member,
    b64,
    error_text,
    kv_document,
    range_end,
    transport_failure,
    unb64,
)
from controller.store.etcd.keys import Keyspace

log = logging.getLogger(__name__)

# How long a watch stream may stay silent before it is re-established (it resumes
# after the last delivered revision, so this costs nothing but a request).
_WATCH_IDLE = 5.0


class Watch:
    """One watch(): a thread reading the gateway's watch stream of PREFIX/docs/, from
    one member at a time, resuming after the last delivered revision."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keyspace,
        after: int,
        callback: WatchCallback,
        on_error: Callable[[StoreError], None] | None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.name = keys.prefix  # in logs
        self.last = after  # the last revision delivered
        self.callback = callback
        self.on_error = on_error
        self._stopped = threading.Event()
        self._response: requests.Response | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"etcd-watch {keys.prefix}", daemon=True
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
        members = self.client.members
        n = len(members)
        i = self.client.preferred
        failures = 0
        backoff = 0.05
        while not self._stopped.is_set():
            member = members[i % n]
            try:
                self._stream(member)
                failures, backoff = 0, 0.05  # it worked, then ended: reconnect at once
            except _Idle:
                failures, backoff = 0, 0.05
                i += 1  # silent: maybe stopped or cut off; the next member will tell
                continue
            except _Gap as gap:
                log.error("etcd watch %s: %s", self.name, gap)
                if self.on_error is not None and not self._stopped.is_set():
                    with contextlib.suppress(Exception):
                        self.on_error(StoreUnavailable(str(gap)))
                return
            except Failure as f:
                if not self._stopped.is_set():
                    log.info("etcd watch %s: %s on %s", self.name, f.reason, member.endpoint)
                failures += 1
            except Exception:  # a bug: say so, keep watching
                log.exception("etcd watch %s on %s", self.name, member.endpoint)
                failures += 1
            i += 1
            if failures and failures % n == 0:  # every member failed: wait a little
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 1.0)

    def _stream(self, member: Member) -> None:
        client = member.new_client()
        docs = self.keys.docs
        request = {
            "create_request": {
                "key": b64(docs),
                "range_end": b64(range_end(docs)),
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
                raise Failure(_classify_stream(exc), sent=False, connected=False) from exc
            self._response = response
            if self._stopped.is_set():
                return
            if response.status_code != 200:
                _, message = error_text(response.text)
                raise Failure(message, sent=False, connected=True)
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
                raise Failure(reason, sent=False, connected=True) from exc
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                if self._stopped.is_set():
                    return
                raise Failure(f"stream broken: {exc}", sent=False, connected=True) from exc
            raise Failure("stream ended", sent=False, connected=True)
        finally:
            self._response = None
            client.session.close()

    def _message(self, message: dict[str, Any]) -> None:
        if "error" in message:
            _, text = error_text(json.dumps(message))
            raise Failure(text, sent=False, connected=True)
        result = message.get("result", {})
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                raise _Gap(
                    f"etcd: the history after revision {self.last} was compacted (up to "
                    f"{compacted}): the watch cannot go on without a gap"
                )
            raise Failure(
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
            event = self._event(raw)
            if event is not None:
                groups[-1][1].append(event)
        for revision, events in groups:
            if self._stopped.is_set():
                return
            if events:
                try:
                    self.callback(events)
                except Exception:
                    log.exception("etcd watch %s: the callback failed", self.name)
            self.last = revision


    def _event(self, raw: dict[str, Any]) -> StoreEvent | None:
        """The StoreEvent of one raw watch event; None if its value is not JSON."""
        kv = raw["kv"]
        kind, key = self.keys.split_doc(unb64(kv["key"]))
        revision = int(kv["mod_revision"])
        if raw.get("type") == "DELETE":
            return StoreEvent(kind, key, None, revision)
        try:
            value = kv_document(kv)
        except ValueError:
            log.error("watch: %s/%s at revision %d is not JSON; ignored", kind, key, revision)
            return None
        return StoreEvent(kind, key, value, revision)


class _Gap(Exception):
    """The watch cannot resume without skipping revisions."""


class _Idle(Exception):
    """The watch stream said nothing for _WATCH_IDLE seconds."""


def _classify_stream(exc: requests.exceptions.RequestException) -> str:
    """The reason a watch stream failed, or "silent" if it only said nothing for a while
    (a read timeout, which iter_content raises as a ConnectionError saying so)."""
    timed_out = isinstance(exc, requests.exceptions.ReadTimeout) or "timed out" in str(exc)
    if timed_out and not isinstance(exc, requests.exceptions.ConnectTimeout):
        return "silent"
    reason = transport_failure(exc).reason
    return reason if reason in ("connect timed out", "connection refused") else "connection lost"


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
