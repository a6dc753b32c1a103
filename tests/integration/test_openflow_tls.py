"""OpenFlow over TLS with the hosts' certificates (docs/security.md, "OpenFlow"), on a
TLS testbed: both switches connect with their own host's certificate and carry
traffic; a connection without a certificate, with another CA's, in plain TCP, or
with host h1's certificate claiming h2's datapath id is refused (counted in
/metrics) and h2's switch keeps its master and its traffic; a second connection with
a host's own certificate may serve its own datapath, and when it leaves the real
switch is served again (issue 17: it stayed orphaned)."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import make_testbed
from tests.integration.testbed import Testbed
from tests.metricstext import label_values, value
from tests.pki import Issued, TestCA

OFP13 = 4
HELLO, ECHO_REQUEST, ECHO_REPLY, FEATURES_REQUEST, FEATURES_REPLY = 0, 2, 3, 5, 6
ROLE_REQUEST = 24


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    with make_testbed(hosts=2, tls=True, idle_timeout=2) as bed:
        bed.create_network("net", "10.71.0.0/24")
        bed.container("h1", "c1", "net")
        bed.container("h2", "c2", "net")
        yield bed


def dpid_of(tb: Testbed, host: str) -> int:
    return int(tb.api_json("GET", f"/api/v1/hosts/{host}")["dpid"])


def metrics(tb: Testbed) -> str:
    # /metrics needs a credential under TLS (docs/security.md)
    return httpx.get(f"{tb.api_url}/metrics", timeout=5, verify=tb.verify,
                     headers={"Authorization": f"Bearer {tb.token}"}).text


def refused(tb: Testbed) -> dict[str, int]:
    text = metrics(tb)
    name = "daolinet_switch_connections_refused_total"
    return {reason: int(value(text, name, reason=reason) or 0)
            for reason in label_values(text, name, "reason")}


def wait_refused(tb: Testbed, reason: str, before: dict[str, int]) -> None:
    tb.wait_until(lambda: refused(tb).get(reason, 0) > before.get(reason, 0), 5.0,
                  f"no {reason} refusal counted")


def context(ca: TestCA, issued: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_file))
    ctx.check_hostname = False  # the switch checks the chain, as OVS does
    if issued is not None:
        ctx.load_cert_chain(issued.cert_file, issued.key_file)
    return ctx


class FakeSwitch:
    """An OpenFlow 1.3 'switch' that says `dpid` in its features reply."""

    def __init__(self, tb: Testbed, ctx: ssl.SSLContext | None, dpid: int) -> None:
        port = int(tb.openflow_target(0).rsplit(":", 1)[1])
        raw = socket.create_connection((tb.controller_ip, port), timeout=5)
        self.sock: socket.socket = raw if ctx is None else ctx.wrap_socket(raw)
        self.dpid = dpid
        self.seen: list[int] = []  # message types received (and FEATURES_REPLY sent)

    def send(self, kind: int, xid: int, body: bytes = b"") -> None:
        self.sock.sendall(struct.pack("!BBHI", OFP13, kind, 8 + len(body), xid) + body)

    def _exactly(self, n: int) -> bytes | None:
        """n bytes; None once the controller closed; TimeoutError if none came."""
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except (ConnectionError, ssl.SSLError):
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def handshake(self) -> None:
        self.send(HELLO, 1)
        self.serve_until(lambda: FEATURES_REPLY in self.seen, 5.0)

    def serve_until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Answer the controller (features, echo) until `done()` or for `seconds`;
        False as soon as the controller closed the connection."""
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                head = self._exactly(8)
            except TimeoutError:
                return True
            if head is None:
                return False
            _, kind, length, xid = struct.unpack("!BBHI", head)
            self.sock.settimeout(5.0)
            if length > 8 and self._exactly(length - 8) is None:
                return False
            if kind == FEATURES_REQUEST:
                self.send(FEATURES_REPLY, xid, struct.pack("!QIBB2xII", self.dpid, 0, 254, 0,
                                                           0, 0))
                self.seen.append(FEATURES_REPLY)
            elif kind == ECHO_REQUEST:
                self.send(ECHO_REPLY, xid)
            else:
                self.seen.append(kind)
        return True

    def closed_by_controller(self, seconds: float = 5.0) -> bool:
        return not self.serve_until(lambda: False, seconds)

    def close(self) -> None:
        self.sock.close()


def traffic_through_both(tb: Testbed) -> bool:
    """A first packet each way, after the routes expired: PacketIns on both switches,
    flows from the controller."""
    tb.wait_idle()
    return tb.ping("c1", "c2", count=2, timeout=3.0) and tb.ping("c2", "c1", count=2)


def test_switches_connect_with_their_own_certificates(tb: Testbed) -> None:
    for host in ("h1", "h2"):
        roles = tb.controller_roles(host)
        assert list(roles) == [tb.openflow_target(0)] and roles[tb.openflow_target(0)] \
            == "master", roles
        assert tb.openflow_target(0).startswith("ssl:")
    assert tb.ping("c1", "c2", count=2)


def test_no_certificate_another_ca_or_plain_tcp_is_refused(tb: Testbed,
                                                           tmp_path: Path) -> None:
    ca = tb.ca
    assert ca is not None
    h2 = dpid_of(tb, "h2")
    rogue = TestCA(tmp_path / "rogue").issue("h2", "host")
    for ctx in (context(ca, None), context(ca, rogue), None):
        before = refused(tb)
        try:
            switch = FakeSwitch(tb, ctx, h2)
        except (ssl.SSLError, ConnectionError):
            wait_refused(tb, "tls_handshake", before)
            continue
        try:
            try:
                switch.send(HELLO, 1)
                closed = switch.closed_by_controller()
            except (ssl.SSLError, ConnectionError):  # closed before our hello went out
                closed = True
            assert closed, "a connection without a valid certificate was kept"
            assert FEATURES_REPLY not in switch.seen
        finally:
            switch.close()
        wait_refused(tb, "tls_handshake", before)
    assert tb.controller_roles("h2").get(tb.openflow_target(0)) == "master"
    assert traffic_through_both(tb)


def test_host_a_certificate_claiming_host_b_dpid_is_refused(tb: Testbed) -> None:
    ca = tb.ca
    assert ca is not None
    h1_cert = ca.issue("h1", "host", file_stem="attacker-h1")  # h1's name: h1's credential
    before = refused(tb)
    switch = FakeSwitch(tb, context(ca, h1_cert), dpid_of(tb, "h2"))
    try:
        switch.handshake()
        assert switch.closed_by_controller(), "h1's certificate was let in as h2's switch"
        assert ROLE_REQUEST not in switch.seen  # never asked to be mastered
    finally:
        switch.close()
    wait_refused(tb, "foreign_dpid", before)
    # h2's real switch keeps its master and its traffic
    assert tb.controller_roles("h2").get(tb.openflow_target(0)) == "master"
    assert value(metrics(tb), "daolinet_switches_connected") == 2
    assert traffic_through_both(tb)


def test_own_certificate_serves_its_own_switch_and_the_real_one_serves_again(
    tb: Testbed,
) -> None:
    """h1's credential may open a second connection for h1's datapath (a reconnect);
    when it leaves, h1's real switch, still connected, is served again."""
    ca = tb.ca
    assert ca is not None
    own = ca.issue("h1", "host", file_stem="second-h1")
    before = refused(tb)
    switch = FakeSwitch(tb, context(ca, own), dpid_of(tb, "h1"))
    try:
        switch.handshake()
        assert switch.serve_until(lambda: ROLE_REQUEST in switch.seen, 5.0)
        assert ROLE_REQUEST in switch.seen  # admitted: the controller wants to master it
    finally:
        switch.close()
    assert refused(tb) == before
    tb.wait_until(lambda: value(metrics(tb), "daolinet_switches_connected") == 2,
                  5.0, "h1's switch not connected after the second connection left")
    assert tb.controller_roles("h1").get(tb.openflow_target(0)) == "master"
    assert traffic_through_both(tb)
