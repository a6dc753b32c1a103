"""The testbed's own checks: hosts come up, OVS runs in each, the underlay works,
helpers parse what the tools print, and teardown leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_testbed
from testbed import (
    BRIDGE,
    Flow,
    Testbed,
    cleanup_leftovers,
    netns_list,
    netns_pids,
    parse_traceroute,
    root_links,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_flow_parser() -> None:
    line = (
        " cookie=0xd100000000000007, duration=1.234s, table=1, n_packets=3, n_bytes=294,"
        " send_flow_rem idle_timeout=3, priority=100,ip,in_port=2,nw_src=10.1.0.5,"
        "nw_dst=10.1.0.6 actions=set_field:02:da:00:00:00:01->eth_src,output:3"
    )
    f = Flow.parse(line)
    assert f.cookie == 0xD100000000000007
    assert f.kind == 0xD1
    assert (f.table, f.priority, f.idle_timeout, f.n_packets) == (1, 100, 3, 3)
    assert f.flags == ("send_flow_rem",)
    assert f.match == "ip,in_port=2,nw_src=10.1.0.5,nw_dst=10.1.0.6"
    assert f.fields["nw_dst"] == "10.1.0.6"
    assert f.actions == "set_field:02:da:00:00:00:01->eth_src,output:3"
    base = Flow.parse(" cookie=0xd000000000000000, duration=9s, table=1, n_packets=0,"
                      " n_bytes=0, priority=0 actions=CONTROLLER:65535")
    assert (base.table, base.priority, base.match) == (1, 0, "")


def test_traceroute_parser() -> None:
    out = (
        "traceroute to 10.1.0.6 (10.1.0.6), 5 hops max, 60 byte packets\n"
        " 1  198.18.7.11  0.101 ms\n"
        " 2  *\n"
        " 3  10.1.0.6  0.310 ms\n"
    )
    assert parse_traceroute(out) == ["198.18.7.11", None, "10.1.0.6"]


def test_two_hosts_underlay_and_teardown(testbed_factory) -> None:
    tb: Testbed = testbed_factory(hosts=2, daolinet=False)
    h1, h2 = tb.hosts["h1"], tb.hosts["h2"]

    # names and addresses
    assert len(tb.bridge) <= 15 and tb.bridge.startswith("dlt")
    assert tb.controller_ip == f"198.18.{tb.octet}.1"
    assert (h1.address, h2.address) == (f"198.18.{tb.octet}.11", f"198.18.{tb.octet}.12")
    assert all(len(h.veth) <= 15 for h in (h1, h2))

    # OVS daemons run inside each host's netns, each with its own db and rundir
    for h in (h1, h2):
        assert h.ovsdb is not None and h.vswitchd is not None
        pids = netns_pids(h.ns)
        assert h.vswitchd.pid in pids, f"ovs-vswitchd of {h.name} not in {h.ns}"
        assert h.ovsdb.pid in pids, f"ovsdb-server of {h.name} not in {h.ns}"
        assert (h.dir / "ovs-vswitchd.pid").read_text().strip() == str(h.vswitchd.pid)
        assert tb.vsctl(h, "show").returncode == 0
    assert h1.db_sock != h2.db_sock

    # the underlay: host ↔ host, host ↔ controller address
    assert tb.ping(h1, h2, count=2, all_replies=True)
    assert tb.ping(h2, h1.address)
    assert tb.ping(h1, tb.controller_ip)
    assert tb.traceroute(h1, h2) == [h2.address]
    assert tb.tcp_ok(h1, h2, port=7001)
    assert tb.udp_ok(h2, h1, port=7002)

    # a netdev bridge made by hand: its mgmt socket is in the host dir, flows parse
    assert tb.vsctl(h1, "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                    "datapath_type=netdev", "protocols=OpenFlow13",
                    "fail_mode=secure").returncode == 0
    wait_until(h1.mgmt.exists, 10, f"{h1.mgmt} not created")
    res = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "add-flow", f"unix:{h1.mgmt}",
         "cookie=0xd000000000000001,table=1,priority=0,actions=drop"],
        capture_output=True, text=True, check=False,
    )
    assert res.returncode == 0, res.stderr
    flows = tb.parsed_flows(h1, table=1)
    assert [(f.table, f.priority, f.kind) for f in flows] == [(1, 0, 0xD0)]
    assert tb.flows(h1, table=0) == []
    assert tb.kernel_routes(h1) == []
    assert BRIDGE in tb.interfaces(h1)  # netdev LOCAL port is a tap in the host netns

    # teardown removes everything
    procs = [p.pid for p in (h1.ovsdb, h1.vswitchd, h2.ovsdb, h2.vswitchd) if p]
    workdir, registry = tb.dir, tb.registry_file
    assert registry.exists()
    tb.close()
    left = tb.resources()
    assert left == {"netns": [], "links": [], "processes": []}, left
    assert not [n for n in netns_list() if n.startswith(f"dlt{tb.id}")]
    assert not [n for n in root_links() if n.startswith(f"dlt{tb.id}")]
    for pid in procs:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} survived"
    assert not workdir.exists()
    assert not registry.exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_leftovers_of_a_crashed_run_are_removed() -> None:
    require_testbed(daolinet=False)
    here = str(Path(__file__).parent)
    script = (
        f"import sys, time; sys.path.insert(0, {here!r})\n"
        "from testbed import Testbed\n"
        "tb = Testbed(hosts=1, daolinet=False).start()\n"
        "print(tb.id, tb.dir, tb.hosts['h1'].vswitchd.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line, "child testbed did not start"
        ident, workdir, vswitchd = line[0], Path(line[1]), int(line[2])
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # a crash: no teardown runs
        child.wait()
    assert any(n.startswith(f"dlt{ident}") for n in netns_list())
    assert Path(f"/proc/{vswitchd}").exists()

    removed = cleanup_leftovers()

    assert removed
    assert not [n for n in netns_list() if n.startswith(f"dlt{ident}")]
    assert not [n for n in root_links() if n.startswith(f"dlt{ident}")]
    wait_until(lambda: not Path(f"/proc/{vswitchd}").exists() or _zombie(vswitchd), 5,
               "ovs-vswitchd of the crashed testbed survived cleanup")
    assert not workdir.exists()


def test_live_testbed_survives_leftover_cleanup(testbed_factory) -> None:
    tb: Testbed = testbed_factory(hosts=1, daolinet=False)
    cleanup_leftovers()
    assert tb.resources()["netns"] == [tb.hosts["h1"].ns]
    assert tb.bridge in root_links()
    assert tb.hosts["h1"].vswitchd is not None and tb.hosts["h1"].vswitchd.alive()


def test_full_stack_comes_up(testbed_factory) -> None:
    """Controller + two agents: registered, br-dl netdev/secure/OF1.3, base flows."""
    tb: Testbed = testbed_factory(hosts=2)
    assert tb.api("GET", "/healthz").status_code == 200
    assert tb.api("GET", "/hosts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    names = {h["name"] for h in tb.api_json("GET", "/hosts")}
    assert names == {"h1", "h2"}
    for h in tb.hosts.values():
        out = tb.vsctl(h, "--format=json", "--columns=datapath_type,fail_mode,protocols",
                       "list", "Bridge", BRIDGE).stdout
        row = json.loads(out)["data"][0]
        assert row[0] == "netdev"
        assert row[1] == "secure"
        assert "OpenFlow13" in json.dumps(row[2])
        table0 = {f.priority for f in tb.parsed_flows(h, 0)}
        assert {200, 100, 50, 0} <= table0
        assert [f.priority for f in tb.parsed_flows(h, 1)] == [0]
        assert all(f.kind == 0xD0 for f in tb.parsed_flows(h))
