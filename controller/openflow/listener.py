"""The OpenFlow TLS listener: switches connect with their host's certificate
(docs/security.md, "OpenFlow").

os-ken has a TLS listener of its own, but it builds its SSL context once from files,
does the handshake without a time limit, and a refused handshake is only an
uncaught exception in its log.  Here each accepted connection gets `HANDSHAKE_TIMEOUT`
seconds to complete a handshake that requires a client certificate of the
deployment's CA (the context comes from a callable, so renewed files are used for
new connections); a failed one is closed and counted (Admission, reason
`tls_handshake`), and an established one is handed to os-ken as its own listener
would (`datapath_connection_factory`), to be checked again once the switch says its
datapath id (controller/openflow/admission.py).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from controller.openflow.admission import TLS_HANDSHAKE, Admission

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0  # seconds a connection may take to present its certificate
MAX_HANDSHAKES = 64  # handshakes under way at once; more connections wait in the backlog


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context that requires a client certificate signed by `ca`;
    ValueError naming a file that cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"OpenFlow TLS: cannot load {cert}, {key} or {ca}: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class TLSListener:
    """Accepts switch connections on `address`, each on its own thread."""

    def __init__(
        self,
        address: tuple[str, int],
        context: Callable[[], ssl.SSLContext],
        admission: Admission,
        serve: Callable[[ssl.SSLSocket, tuple[str, int]], None],
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._admission = admission
        self._serve = serve
        self._slots = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self._sock = socket.create_server(address, reuse_port=False, backlog=128)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        threading.Thread(target=self._accept, name="openflow-tls", daemon=True).start()

    def _accept(self) -> None:
        while True:
            self._slots.acquire()
            try:
                conn, addr = self._sock.accept()
            except OSError:
                self._slots.release()
                return  # closed
            threading.Thread(
                target=self._handshake, args=(conn, addr), name=f"openflow {addr[0]}",
                daemon=True,
            ).start()

    def _handshake(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            conn.settimeout(self._handshake_timeout)
            tls = self._context().wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError, ValueError) as exc:  # ValueError: files unloadable
            self._admission.count(TLS_HANDSHAKE)
            log.warning("OpenFlow connection from %s refused: TLS handshake failed (%s)",
                        addr[0], getattr(exc, "reason", None) or exc)
            with contextlib.suppress(OSError):
                conn.close()
            return
        finally:
            self._slots.release()
        tls.settimeout(None)  # os-ken sets its own timeout on the connection
        self._serve(tls, addr)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
