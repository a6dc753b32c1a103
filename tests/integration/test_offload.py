"""Checksum offload on the userspace datapath: the first packet of a connection goes
through the controller (PacketIn, PacketOut) and must arrive with a valid TCP/UDP
checksum even when the container's interface left only the partial sum in it
(controller/openflow/checksum.py).

OVS userspace TSO (`other_config:userspace-tso-enable`, read when ovs-vswitchd starts)
is what makes ports keep checksum offload; the containers' interfaces get tx checksum
and TSO back on (the agent turns tx off on netdev datapaths without it)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from conftest import require_testbed
from testbed import Container, Testbed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5400))
s.settimeout(5)
try:
    print("got", s.recv(2048).decode())
except TimeoutError:
    print("nothing")
"""
SEND = """
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"first " + b"x" * 900,
                                                        (sys.argv[1], 5400))
"""


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    require_testbed(daolinet=True)
    bed = Testbed(["h1", "h2"], idle_timeout=10,
                  ovs_other_config={"userspace-tso-enable": "true"})
    try:
        bed.start()
        for h in bed.hosts.values():
            assert "Userspace TCP Segmentation Offloading support enabled" in (
                h.vswitchd_log.read_text()), f"ovs-vswitchd of {h.name} did not enable TSO"
        bed.create_network("blue", "10.5.0.0/24")
        for i in range(1, 5):
            for host, side in (("h1", "a"), ("h2", "b")):
                c = bed.container(host, f"{side}{i}", "blue")
                for ifname in c.ifnames:
                    bed.exec(c, "ethtool", "-K", ifname, "tx", "on", "tso", "on", check=True)
        yield bed
    finally:
        bed.close()


def offload_on(tb: Testbed, c: Container) -> bool:
    out = tb.exec(c, "ethtool", "-k", c.ifnames[0], check=True).stdout
    return bool(re.search(r"^\s*tx-checksum-ip-generic: on", out, re.M))


@pytest.mark.parametrize(("src", "dst"), [("a1", "a2"), ("a3", "b3")],
                         ids=["same-host", "other-host"])
def test_the_first_udp_datagram_arrives(tb: Testbed, src: str, dst: str) -> None:
    """A fresh pair: its first datagram is the PacketIn the controller sends back."""
    s, d = tb.containers[src], tb.containers[dst]
    assert offload_on(tb, s), "the sender's tx checksum offload is off: nothing tested"
    receiver = tb.spawn(d, "python3", "-c", RECEIVE, what="udp receiver")
    tb.wait_until(lambda: "5400" in tb.exec(d, "ss", "-lun").stdout, 5, "no receiver")
    tb.exec(s, "python3", "-c", SEND, d.ip, check=True)
    receiver.popen.wait(timeout=10)
    assert receiver.log.read_text().startswith("got first"), receiver.log.read_text()


def test_the_first_syn_is_answered(tb: Testbed) -> None:
    """TCP connects without retransmitting its SYN (a dropped first SYN costs 1 s)."""
    s, d = tb.containers["a4"], tb.containers["b4"]
    server = tb.spawn(d, "python3", "-c",
                      "import socket; s = socket.create_server(('0.0.0.0', 5401)); "
                      "s.accept()[0].close()", what="tcp server")
    tb.wait_until(lambda: "5401" in tb.exec(d, "ss", "-ltn").stdout, 5, "no server")
    before = tb.exec(s, "nstat", "-az", "TcpRetransSegs", check=True).stdout
    tb.exec(s, "python3", "-c",
            f"import socket; socket.create_connection(('{d.ip}', 5401), timeout=5).close()",
            check=True)
    after = tb.exec(s, "nstat", "-az", "TcpRetransSegs", check=True).stdout
    server.popen.wait(timeout=10)

    def count(out: str) -> int:
        m = re.search(r"TcpRetransSegs\s+(\d+)", out)
        assert m, out
        return int(m.group(1))

    assert count(after) - count(before) == 0, f"SYN retransmitted:\n{before}\n{after}"
