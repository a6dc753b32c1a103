"""SSL contexts of daolinet's channels, which pick up renewed certificate files.

Certificates are short-lived and renewed in place (docs/security.md, "Rotation"):
the same paths get a new key and certificate.  Nothing here restarts: the server
context checks the files at each handshake (a `stat` of three files) and serves
new connections with a context built from the renewed files; a client context
reloads its certificate in place when `refresh()` sees them change, before it
connects.  A renewal caught half-written fails to load: the old context stays and
the next check tries again.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TlsFiles:
    """The deployment's CA certificate, and this process's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def stamp(self) -> Stamp:
        """What changes when a file is replaced or rewritten."""
        out = []
        for path in (self.ca, self.cert, self.key):
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)


def _base(protocol: int) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_cert(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the certificate {files.cert} with its key {files.key}: {exc}"
        ) from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA certificate {ca}: {exc}") from None


def build_server_context(files: TlsFiles, *, require_client: bool = False) -> ssl.SSLContext:
    """A server context: our certificate; a client certificate optional, and verified
    against the CA when given (hosts and replicas present theirs, operators may use
    a bearer token instead), or required (`require_client`: a server that takes no
    token, like the agent's metrics).  ValueError naming the file that cannot be
    loaded."""
    context = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_cert(context, files)
    _load_ca(context, files.ca)
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    # No TLS 1.3 session tickets: no client of ours resumes sessions, and a ticket
    # makes the socket readable before the HTTP answer, which traps the reader of
    # websockets' synchronous client in a TLS read (controller/trust/wsclient.py).
    context.num_tickets = 0
    return context


def build_client_context(ca: Path, files: TlsFiles | None = None) -> ssl.SSLContext:
    """A client context verifying the server against the CA (and its address or name
    against the certificate's); with `files`, presenting our certificate."""
    context = _base(ssl.PROTOCOL_TLS_CLIENT)
    _load_ca(context, ca)
    if files is not None:
        _load_cert(context, files)
    return context


def shared_ca(a: Path, b: Path) -> bool:
    """Whether two CA files hold a certificate in common (one CA trusted for two
    purposes).  ValueError naming a file that does not load."""
    held = []
    for path in (a, b):
        context = _base(ssl.PROTOCOL_TLS_CLIENT)
        _load_ca(context, path)
        held.append({bytes(der) for der in context.get_ca_certs(binary_form=True)})
    return bool(held[0] & held[1])


class ServerContext:
    """The API server's context; `context` is given to the server once and hands each
    new connection the newest context built from the files."""

    def __init__(self, files: TlsFiles, *, require_client: bool = False) -> None:
        self.files = files
        self.require_client = require_client
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        self.context = build_server_context(files, require_client=require_client)
        self.context.sni_callback = self._pick  # called at every handshake (SNI or not)
        self._current = self.context
        self.reloads = 0

    def current(self) -> ssl.SSLContext:
        """The newest context: rebuilt when the files changed since the last build."""
        with self._lock:
            try:
                stamp = self.files.stamp()
                if stamp != self._stamp:
                    self._current = build_server_context(
                        self.files, require_client=self.require_client)
                    self._stamp = stamp
                    self.reloads += 1
                    log.info("TLS: loaded the renewed certificate %s", self.files.cert)
            except (OSError, ValueError) as exc:
                log.warning("TLS: keeping the current certificate: %s", exc)
            return self._current

    def _pick(self, conn: ssl.SSLObject, server_name: str | None,
              context: ssl.SSLContext) -> None:
        newest = self.current()
        if newest is not context:
            conn.context = newest
        del server_name


class ClientContext:
    """A client's context (`context`, given to HTTP and WebSocket clients), its
    certificate reloaded in place by `refresh()` once the files changed."""

    def __init__(self, ca: Path, files: TlsFiles | None = None) -> None:
        self.ca = ca
        self.files = files
        self._lock = threading.Lock()
        self._stamp = files.stamp() if files is not None else None
        self.context = build_client_context(ca, files)
        self.reloads = 0

    def refresh(self) -> ssl.SSLContext:
        """Reload the certificate and key (and add a renewed CA) if their files
        changed; the context, for the next connection."""
        files = self.files
        if files is None:
            return self.context
        with self._lock:
            try:
                stamp = files.stamp()
                if stamp != self._stamp:
                    build_client_context(self.ca, files)  # all of it loads, or none
                    _load_cert(self.context, files)
                    _load_ca(self.context, self.ca)
                    self._stamp = stamp
                    self.reloads += 1
                    log.info("TLS: loaded the renewed certificate %s", files.cert)
            except (OSError, ValueError) as exc:
                log.warning("TLS: keeping the current certificate: %s", exc)
        return self.context
