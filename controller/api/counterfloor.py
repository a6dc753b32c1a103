"""Counters that only go up across scrapes (docs/architecture.md, "Metrics").

Most of the controller's counters are plain sums that never shrink, but a few are
derived: `denied_packets` adds the packets counted by the live deny flows at their
last dump to those of the flows already gone, and a flow can go between a dump and
its removal's count.  Prometheus reads any decrease as a restart of the process and
adds the whole value again in `rate()`, so every counter series passes through a
floor: its last value, per series, while the series is exposed.
"""

from __future__ import annotations

import threading

SeriesKey = tuple[str, tuple[str, ...]]  # metric name, label values


class CounterFloor:
    """The highest value each counter series was exposed with.  A series missing from
    a scrape is forgotten (a removed host's), so the memory is bounded by the series
    of one scrape, itself bounded (ControllerCollector's `max_hosts`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[SeriesKey, float] = {}

    def scrape(self, values: dict[SeriesKey, float]) -> dict[SeriesKey, float]:
        """Each value raised to its series' last one; the next scrape's floor."""
        with self._lock:
            out = {key: max(value, self._last.get(key, value)) for key, value in values.items()}
            self._last = dict(out)
        return out
