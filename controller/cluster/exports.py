"""What replicas send each other when masters are spread over them: exports of
route needs (controller/datapath/needs.py), over HTTP to the replica that masters
the host's switch (`/api/v1/replicas/needs`, controller/api/routes/exports.py).

One sender thread per destination host keeps that host's exports in order (each
is a whole set; the receiver orders them by generation and token anyway) and
turns every answer - or its absence - into `Core.exports_acked`.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any

import httpx

from controller.datapath.needs import NeedsExport
from controller.datapath.runtime import DatapathRuntime
from controller.trust.tls import ClientContext

log = logging.getLogger(__name__)

NEEDS_PATH = "/api/v1/replicas/needs"
EXPORT_TIMEOUT = 3.0  # seconds: a setup waits no longer (core.SETUP_TIMEOUT)
# The receiver answers within EXPORT_TIMEOUT (ok or not, routes/exports.py); we wait
# this much longer for that answer, so a host whose agent is slow is reported as such
# and not as a timed-out read.
ANSWER_MARGIN = 1.0
RETRIES, RETRY_EVERY = 10, 0.1  # while the host changes masters (Exporter._post)


def export_body(sender: str, export: NeedsExport) -> dict[str, Any]:
    return {
        "sender": sender,
        "host": export.host,
        "generation": export.generation,
        "token": export.token,
        "needs": {str(d): {str(a): str(v) for a, v in sorted(n.items())}
                  for d, n in sorted(export.needs.items())},
    }


class Exporter:
    """The runtime's way to other replicas (made by its `exports` factory)."""

    def __init__(self, runtime: DatapathRuntime, token: str,
                 tls: ClientContext | None = None) -> None:
        self.runtime = runtime
        self.token = token
        self.tls = tls  # our replica certificate: the receiver requires it under TLS
        self._lock = threading.Lock()
        self._queues: dict[str, queue.SimpleQueue[tuple[str, NeedsExport]]] = {}
        self.sent = 0
        self.failed = 0

    def send(self, sender: str, export: NeedsExport) -> None:
        with self._lock:
            q = self._queues.get(export.host)
            if q is None:
                q = self._queues[export.host] = queue.SimpleQueue()
                threading.Thread(target=self._drain, args=(export.host, q), daemon=True,
                                 name=f"daolinet-export-{export.host}").start()
        q.put((sender, export))

    def _drain(self, host: str, q: queue.SimpleQueue[tuple[str, NeedsExport]]) -> None:
        verify: ssl.SSLContext | bool = self.tls.refresh() if self.tls is not None else True
        timeout = httpx.Timeout(EXPORT_TIMEOUT, read=EXPORT_TIMEOUT + ANSWER_MARGIN)
        with httpx.Client(timeout=timeout, verify=verify) as client:
            while True:
                sender, export = q.get()
                ok = self._post(client, sender, export)
                with self._lock:
                    self.sent += 1
                    self.failed += not ok
                self.runtime.handle_timed(self.runtime.core.exports_acked, host, export.token, ok)

    def _post(self, client: httpx.Client, sender: str, export: NeedsExport) -> bool:
        """Deliver one export; a host changing masters is tried again for a moment:
        the new master may not have seen the assignment yet (409), and every setup
        or takeover waiting for this is better served by a retry than by a failure."""
        for attempt in range(RETRIES + 1):
            if attempt:
                time.sleep(RETRY_EVERY)
            url = self.runtime.owner_api(export.host)
            if url is None:
                why = "no replica masters it now"
                continue
            try:
                answer = client.post(url.rstrip("/") + NEEDS_PATH,
                                     json=export_body(sender, export),
                                     headers={"Authorization": f"Bearer {self.token}"})
            except httpx.HTTPError as exc:
                log.warning("export %d for %s to %s failed: %s", export.token, export.host,
                            url, exc)
                return False
            if answer.status_code == 409:
                why = f"{url}: {answer.text[:200]}"
                continue
            if answer.status_code != 200:
                log.warning("export %d for %s: %s answered %d %s", export.token, export.host,
                            url, answer.status_code, answer.text[:200])
                return False
            ok = bool(answer.json().get("ok"))
            if not ok:
                log.warning("export %d for %s: %s did not have the host's agent hold it "
                            "within %gs", export.token, export.host, url, EXPORT_TIMEOUT)
            return ok
        log.warning("export %d for %s: %s", export.token, export.host, why)
        return False
