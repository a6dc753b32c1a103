"""The connection log as JSON lines in a file, for log shippers (Vector, Fluent Bit,
Promtail tail a file): one object per line, as GET /api/v1/connections shows an
entry.

A thread of its own takes the log's new entries every `every` seconds and appends
them in one write, so neither the core's threads nor the API's event loop ever
wait for the disk.  The file is opened again for each batch, so a rotation that
moves it away (logrotate without copytruncate) is followed at the next batch.  A
denied flood's entry is written once, when its interval closes, with its count.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from controller.connlog.log import ConnectionLog

log = logging.getLogger(__name__)


class JsonLinesWriter:
    def __init__(
        self, connlog: ConnectionLog, path: Path, replica: str, every: float = 1.0
    ) -> None:
        self.connlog = connlog
        self.path = path
        self.replica = replica
        self.every = every
        self.written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="connlog-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is left (every open summary too) and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.flush()

    def flush(self, final: bool = False) -> int:
        """Append the log's pending entries; the number of lines written."""
        batch = self.connlog.drain(final)
        if not batch:
            return 0
        text = "".join(
            json.dumps(e.to_dict(self.replica), separators=(",", ":")) + "\n" for e in batch
        )
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:  # a full or missing disk costs lines, not the controller
            log.error("connection log: could not write %d lines to %s: %s",
                      len(batch), self.path, exc)
            return 0
        self.written += len(batch)
        return len(batch)
