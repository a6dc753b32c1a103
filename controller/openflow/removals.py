"""FlowRemoved notices gathered into batches, one per switch, for the core.

Flows installed together idle out together: a switch sends their notices in a
burst, and handled one at a time each was a route sync of the same host (and a
delta to its agent).  The app adds each notice here and flushes when its event
queue holds nothing more, and before it handles any other event, so the core
sees every event in the order the switches sent them: a batch is a run of
consecutive notices in the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from controller.datapath.events import RemovedFlow

# Deliver a batch before it grows past this (os-ken's queue holds 128 events, so
# it is a guard against a queue that never empties, not a limit met in practice).
MAX_BATCH = 1024


class RemovedBatches:
    """Notices waiting for their switch's batch to be delivered."""

    def __init__(self, deliver: Callable[[int, list[RemovedFlow]], None]) -> None:
        self._deliver = deliver
        self._lock = threading.Lock()
        self._waiting: dict[int, list[RemovedFlow]] = {}  # dpid -> notices, in order
        self._count = 0

    def add(self, dpid: int, notice: RemovedFlow) -> bool:
        """Hold `notice`; whether the batches are now full (flush them)."""
        with self._lock:
            self._waiting.setdefault(dpid, []).append(notice)
            self._count += 1
            return self._count >= MAX_BATCH

    def flush(self) -> None:
        """Deliver every batch held, each switch's once (in the order their first
        notices came)."""
        with self._lock:
            if not self._count:
                return
            waiting, self._waiting, self._count = self._waiting, {}, 0
        for dpid, notices in waiting.items():
            self._deliver(dpid, notices)
