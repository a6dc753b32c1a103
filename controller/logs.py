"""Logging of the console scripts (daolinet-controller, daolinet-hostnet): INFO is one
line per meaningful event (a container attached, a route added, a stream
reconnected); periodic requests go to DEBUG.

Two sources would otherwise fill the journal: httpx logs every request it makes at
INFO (the agent's network sync asks the controller every 2 s), and uvicorn's access
log has a line for every request the API answers (that same sync, seen from the
controller).  So below DEBUG the httpx and httpcore loggers only pass warnings, and
the access log keeps what changed something or failed: a successful read (GET, HEAD)
is logged at DEBUG.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log each request at INFO.
REQUEST_LOGGERS = ("httpx", "httpcore")
ACCESS_LOGGER = "uvicorn.access"
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def level_of(name: str | int) -> int:
    """A level from its name ("debug", "INFO") or number; ValueError if unknown."""
    if isinstance(name, int):
        return name
    value = logging.getLevelName(name.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}: use debug, info, warning or error")
    return value


def configure_logging(level: str | int) -> None:
    """The root logger at `level` (one line per record on stderr), with the request
    loggers quiet unless `level` is DEBUG."""
    lvl = level_of(level)
    logging.basicConfig(level=lvl, format=FORMAT)
    logging.getLogger().setLevel(lvl)  # also when a handler was already there
    quiet = logging.DEBUG if lvl <= logging.DEBUG else logging.WARNING
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


class ReadsAtDebug(logging.Filter):
    """For uvicorn's access log: a successful read becomes a DEBUG record, passed
    only if the access logger is enabled for DEBUG; everything else is unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn: (client address, method, path, HTTP version, status code)
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        method, status = args[1], args[4]
        if method not in READS or not isinstance(status, int) or status >= 400:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.DEBUG)


def quiet_access_log() -> None:
    """Install `ReadsAtDebug` on the access logger (after uvicorn configured it)."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, ReadsAtDebug) for f in access.filters):
        access.addFilter(ReadsAtDebug())
