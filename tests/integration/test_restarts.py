"""Restarts of the parts of a host that the other modules do not restart (issue "hosts
stay up"): ovs-vswitchd (as `systemctl restart openvswitch-switch` does) and
wireguard-go (it ends), each while a container pings one on another host (of another
site, for wireguard-go) every 50 ms.  Measured and printed: the longest
time without a reply; asserted: the established ping gets replies again and keeps
them, the switch reconnects to the controller with its base flows, and a new
connection is set up afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import require_testbed
from testbed import Testbed, tail
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


@pytest.fixture(scope="module")
def sites_tb() -> Iterator[Testbed]:
    require_testbed()
    with Testbed(["h1", "h2"], sites={"h1": "a", "h2": "b"}, wireguard=True,
                 idle_timeout=10, container_tx_off=True) as tb:
        tb.create_network("green", "10.62.0.0/24")
        yield tb


def wireguard_go_pids(tb: Testbed, host: str) -> list[int]:
    wg_if = tb.host(host).wg_if
    out = subprocess.run(["pgrep", "-f", f"^wireguard-go {wg_if}$"], capture_output=True,
                         text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def test_wireguard_go_ends(sites_tb: Testbed) -> None:
    """wireguard-go of a host ends (it daemonizes: nothing supervises it): its agent
    makes the interface again and asks for the whole state, so the cross-site ping
    gets replies again, and a new cross-site connection is set up."""
    tb = sites_tb
    a = tb.container("h1", "a", "green", ip="10.62.0.11")
    b = tb.container("h2", "b", "green", ip="10.62.0.21")
    assert tb.ping(a, b, count=2, timeout=2)
    pids = wireguard_go_pids(tb, "h1")
    assert len(pids) == 1, pids
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, "ping", "-D", "-n", "-i", str(INTERVAL), "-W", "1",
         "-w", "20", b.ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        ended = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        tb.wait_until(lambda: tb.ping(a, b, count=1, timeout=1), 20,
                      "the cross-site ping got no reply after wireguard-go ended",
                      detail=lambda: tail(tb.host("h1").agent_log, 30))
        back = time.monotonic() - ended
        output, _ = pinger.communicate(timeout=40)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    lost, gap_ms = ping_gap(output, INTERVAL)
    print(f"\nwireguard-go ended: replies again {back:.2f} s later; longest gap "
          f"{gap_ms:.0f} ms, {lost} of the pings lost")
    assert len(wireguard_go_pids(tb, "h1")) == 1, "no wireguard-go serves h1 again"
    assert "making it again" in tb.host("h1").agent_log.read_text()
    c = tb.container("h1", "c", "green", ip="10.62.0.12")
    d = tb.container("h2", "d", "green", ip="10.62.0.22")
    assert tb.ping(c, d, count=2, timeout=2), "no new cross-site connection afterwards"
