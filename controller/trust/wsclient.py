"""WebSocket client connections whose opening is bounded over TLS too.

The agents' streams (hostnet/agent/stream.py) and the replicas' liveness streams
(controller/cluster/leases.py) use websockets' synchronous client.  Its
`open_timeout` does not bound a `wss:` opening on its own: the connection's reader
thread reads the socket as soon as select() says it is readable, and after a TLS 1.3
handshake it is (the server's session tickets) while no HTTP answer has come.  The
reader then blocks inside the TLS read, where closing the socket at the timeout does
not reach it, so the opening waits for as long as the server keeps silent (seen: an
agent waited over 25 s for a replica busy with an etcd outage, and its host got no
route meanwhile).  Here the socket itself times out the reads of the opening, so the
reader ends and the opening fails with the timeout it was given.

(Our servers also send no session tickets: controller/trust/tls.py.)
"""

from __future__ import annotations

import contextlib
from typing import Any

from websockets.datastructures import HeadersLike
from websockets.http11 import USER_AGENT
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _connect


class BoundedOpening(ClientConnection):
    """A client connection whose socket reads time out until its opening is done.

    The timeout is set before the connection's reader thread starts: changing it
    while that thread is inside a TLS read makes the read fail at once."""

    read_timeout: float = 10.0  # set per connection by `connect`

    def __init__(self, socket: Any, protocol: Any, **kwargs: Any) -> None:
        socket.settimeout(self.read_timeout)
        super().__init__(socket, protocol, **kwargs)

    def handshake(
        self,
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = USER_AGENT,
        timeout: float | None = None,
    ) -> None:
        try:
            super().handshake(additional_headers, user_agent_header, timeout)
        finally:
            # Open (or failed): reads wait as long as they need from now on; the
            # pings of the stream's keepalive find a silent server.
            with contextlib.suppress(OSError):  # closed by a failed opening
                self.socket.settimeout(None)


def connect(url: str, *, open_timeout: float, **kwargs: Any) -> ClientConnection:
    """websockets' `connect`, its opening bounded over TLS too: it fails at the latest
    twice `open_timeout` after it started (the opening's deadline, then the reader's
    last read)."""
    opening = type("BoundedOpening", (BoundedOpening,), {"read_timeout": open_timeout})
    connection: ClientConnection = _connect(url, open_timeout=open_timeout,
                                            create_connection=opening, **kwargs)
    return connection
