"""Restarts of the parts of a host that the other modules do not restart (issue "hosts
stay up"): ovs-vswitchd (as `systemctl restart openvswitch-switch` does), while a
container pings one on another host every 50 ms.  Measured and printed: the longest
time without a reply; asserted: the established ping gets replies again and keeps
them, the switch reconnects to the controller with its base flows, and a new
connection is set up afterwards."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import require_testbed
from testbed import Testbed
from testbed.hosts import base_flows_installed, controller_connected
from testbed.traffic import ping_gap

INTERVAL = 0.05


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    require_testbed()
    with Testbed(["h1", "h2"], idle_timeout=10) as tb:
        tb.create_network("blue", "10.60.0.0/24")
        yield tb


def test_ovs_vswitchd_restart(tb: Testbed) -> None:
    a = tb.container("h1", "a", "blue", ip="10.60.0.11")
    b = tb.container("h2", "b", "blue", ip="10.60.0.21")
    assert tb.ping(a, b, count=2, timeout=2)
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, "ping", "-D", "-n", "-i", str(INTERVAL), "-W", "1",
         "-w", "20", b.ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        restarted = time.monotonic()
        tb.restart_vswitchd("h1")
        tb.wait_until(lambda: tb.ping(a, b, count=1, timeout=1), 15,
                      "the established ping got no reply after ovs-vswitchd restarted",
                      detail=tb.state_dump)
        back = time.monotonic() - restarted
        output, _ = pinger.communicate(timeout=40)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    lost, gap_ms = ping_gap(output, INTERVAL)
    print(f"\novs-vswitchd restart: replies again {back:.2f} s after the restart began; "
          f"longest gap {gap_ms:.0f} ms, {lost} of the pings lost")
    # once back, the replies kept coming: the last second of the ping was answered
    tail_seqs = [int(x) for x in re.findall(r"icmp_seq=(\d+)", output)][-int(1 / INTERVAL):]
    assert tail_seqs and tail_seqs == list(range(tail_seqs[0], tail_seqs[0] + len(tail_seqs))), \
        "replies stopped again after the restart"
    h1 = tb.host("h1")
    tb.wait_until(lambda: controller_connected(h1) and base_flows_installed(h1), 10,
                  "h1's switch did not reconnect to the controller with its base flows")
    c = tb.container("h1", "c", "blue", ip="10.60.0.12")
    d = tb.container("h2", "d", "blue", ip="10.60.0.22")
    assert tb.ping(c, d, count=2, timeout=2), "no new connection after the restart"
    assert tb.tcp_ok(c, d)
