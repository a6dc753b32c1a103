"""The OpenFlow app's switch lifecycle (controller/openflow/app.py) with fake
connections: a refused connection never replaces the datapath's; an admitted second
connection serves, and when it closes the earlier one serves again; a revoked
certificate's connection is closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.index import DesiredIndex
from controller.openflow.admission import Admission
from controller.openflow.app import DaolinetApp, OpenFlowDeps
from controller.openflow.switches import Switches
from controller.trust.identity import Identity
from tests.pki import TestCA

DPIDS = {"h1": 1, "h2": 2}


class Sock:
    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return self.der


class Conn:
    """What the app uses of an os-ken Datapath."""

    def __init__(self, dpid: int, der: bytes | None, port: int) -> None:
        self.id = dpid
        self.socket = Sock(der)
        self.address = ("198.18.0.1", port)
        self.state = MAIN_DISPATCHER
        self.is_active = True
        self.sent: list[Any] = []
        self.closed = False

    def send_msg(self, msg: Any) -> None:
        self.sent.append(msg)

    def close(self) -> None:
        self.closed = True
        self.state = DEAD_DISPATCHER

    def roles_asked(self) -> int:
        return sum(isinstance(m, parser.OFPRoleRequest) for m in self.sent)


@dataclass
class Ev:
    msg: Any = None
    datapath: Any = None


@dataclass
class Msg:
    datapath: Any


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


def der(ca: TestCA, name: str) -> bytes:
    issued = ca.issue(name, "host", file_stem=f"{name}-{time.monotonic_ns()}")
    cert = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
    return cert.public_bytes(Encoding.DER)


class Lab:
    def __init__(self) -> None:
        self.revoked: set[int] = set()
        self.roles = Roles()
        self.roles.set_master(1)
        self.switches = Switches(self.roles)
        self.admission = Admission(DPIDS.get, tls=True,
                                   revoked=lambda i: i.serial in self.revoked)
        runtime = DatapathRuntime(DesiredIndex(), self.roles)  # no host: no flows to send
        self.app = DaolinetApp(daolinet=OpenFlowDeps(
            runtime=runtime, roles=self.roles, switches=self.switches,
            admission=self.admission))

    def connect(self, conn: Conn) -> None:
        self.app.on_features(Ev(msg=Msg(conn)))

    def leave(self, conn: Conn) -> None:
        conn.close()
        conn.is_active = False
        self.app.on_dead(Ev(datapath=conn))


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    lab.app.close()


def test_host_a_claiming_host_b_is_closed_and_b_keeps_serving(lab: Lab, ca: TestCA) -> None:
    real = Conn(2, der(ca, "h2"), 1)
    lab.connect(real)
    assert lab.switches.serves(real) and real.roles_asked() == 1
    impostor = Conn(2, der(ca, "h1"), 2)
    lab.connect(impostor)
    assert impostor.closed and impostor.roles_asked() == 0
    assert lab.switches.serves(real)
    assert lab.admission.refusals()["foreign_dpid"] == 1
    lab.leave(impostor)  # its end changes nothing for the real switch
    assert lab.switches.serves(real) and 2 in lab.roles.connected


def test_no_certificate_is_closed(lab: Lab) -> None:
    conn = Conn(2, None, 1)
    lab.connect(conn)
    assert conn.closed and lab.switches.get(2) is None
    assert lab.admission.refusals()["no_certificate"] == 1


def test_a_second_own_connection_serves_and_then_the_first_again(lab: Lab, ca: TestCA) -> None:
    first, second = Conn(1, der(ca, "h1"), 1), Conn(1, der(ca, "h1"), 2)
    lab.connect(first)
    lab.connect(second)
    assert not second.closed and lab.switches.serves(second)
    lab.leave(second)
    assert lab.switches.serves(first) and not first.closed
    assert first.roles_asked() == 2  # asked again: it serves again
    assert 1 in lab.roles.connected
    lab.leave(first)
    assert lab.switches.get(1) is None and 1 not in lab.roles.connected


def test_a_revoked_certificate_closes_its_connection(lab: Lab, ca: TestCA) -> None:
    h1, h2 = Conn(1, der(ca, "h1"), 1), Conn(2, der(ca, "h2"), 2)
    lab.connect(h1)
    lab.connect(h2)
    peers = dict(lab.switches.peers())
    assert isinstance(peers[h1], Identity)
    lab.revoked.add(peers[h1].serial)
    deadline = time.monotonic() + 3.0
    while not h1.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert h1.closed and not h2.closed
    assert lab.admission.refusals()["revoked"] == 1
