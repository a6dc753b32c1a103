"""A loopback TCP proxy a test can cut: a network partition between two processes.

A controller replica given the proxy's address instead of an etcd member's is cut
off from etcd by `cut()` (every connection through it is reset, new ones are
refused) while it keeps its switch connections and its API: exactly the partition
a split-brain test needs.  Loopback only.

`netns`: the proxy listens on the loopback of that network namespace (the same
port as the target's by default) and connects from this one: a process in the
namespace reaches a server on this namespace's loopback at the address it would use
here (the controllers of a WireGuard testbed, in a host's namespace, reach the
test's etcd cluster that way).

Imports nothing of the testbed package.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import pyroute2.netns


def _listen_in(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` of network namespace `netns`: bound by a
    thread of its own that enters the namespace (setns is per thread), so no other
    thread of this process leaves its own."""
    made: list[socket.socket | BaseException] = []

    def bind() -> None:
        try:
            pyroute2.netns.setns(netns, flags=0)
            made.append(socket.create_server(("127.0.0.1", port)))
        except BaseException as exc:  # handed to the caller
            made.append(exc)

    thread = threading.Thread(target=bind, name=f"tcpproxy-bind-{netns}")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class TcpProxy:
    def __init__(self, target: tuple[str, int], netns: str | None = None,
                 port: int | None = None) -> None:
        self.target = target
        if netns is None:
            self._listener = socket.create_server(("127.0.0.1", port or 0))
        else:
            self._listener = _listen_in(netns, target[1] if port is None else port)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._open = True
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every connection through the proxy and refuse new ones."""
        with self._lock:
            self._open = False
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                allowed = self._open
            if not allowed:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
