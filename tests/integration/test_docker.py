"""The Docker network + IPAM plugin against real dockerd instances.

Lab: three testbed hosts; h1 and h2 each run their own dockerd (own data root,
exec root, socket, pidfile, inside the host's network namespace, see testbed/docker.py)
and an agent serving the plugin; h3 has plain namespace containers.  The tests of
this module share the lab and run in order.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest
from conftest import DockerLab as Lab
from testbed import BIN_DIR, Testbed, tail
from testbed.docker import Dockerd
from testbed.traffic import ping_gap

NET = ["-d", "daolinet", "--ipam-driver", "daolinet"]


@pytest.fixture(scope="module")
def lab(docker_lab: Lab) -> Lab:
    return docker_lab  # conftest.py: h1 and h2 with their own dockerd, h3 without


def _ports(tb: Testbed, host: str) -> list[str]:
    return [p for p in tb.vsctl(host, "list-ports", "br-dl").stdout.split() if p]


def _links(tb: Testbed, host: str) -> list[str]:
    return tb.interfaces(tb.host(host))


def _endpoint(tb: Testbed, name: str) -> dict | None:
    r = tb.api("GET", f"/containers/{name}")
    return r.json() if r.status_code == 200 else None


def _network(tb: Testbed, name: str) -> dict | None:
    r = tb.api("GET", f"/networks/{name}")
    return r.json() if r.status_code == 200 else None


def _named(tb: Testbed, name: str) -> dict:
    return tb.wait_until(lambda: _endpoint(tb, name), 10, f"endpoint {name} not named")


def _restarted(tb: Testbed, engine: Dockerd, before: dict) -> dict:
    """The endpoint of a container after a restart (docker start, dockerd's restart, a
    boot), once the agent has named it, checked as a Docker user sees it: the same
    address and name on the same network and host, the MAC Docker now shows, and
    exactly one endpoint of the container at the controller.  Docker makes a new MAC
    at each start of a container run without --mac-address (moby #47233): the address
    then comes back on a new endpoint with that MAC, and the old endpoint and its
    flows are gone."""
    name, network = str(before["name"]), str(before["network"])

    def docker_mac() -> str:
        nets = engine.inspect(name)["NetworkSettings"]["Networks"]
        return str(nets[network]["MacAddress"]).lower()

    ep = tb.wait_until(
        lambda: (e := _endpoint(tb, name)) is not None and e["mac"] == docker_mac() and e,
        10, f"endpoint {name} not named with Docker's MAC",
        detail=lambda: f"endpoint {_endpoint(tb, name)}, Docker's MAC {docker_mac()}")
    assert {k: ep[k] for k in ("name", "ip", "network", "host", "docker_id")} \
        == {k: before[k] for k in ("name", "ip", "network", "host", "docker_id")}
    mine = [e for e in tb.api_json("GET", "/containers")
            if e["network"] == network and (e["ip"] == ep["ip"]
                                            or e.get("docker_id") == ep["docker_id"])]
    assert [e["id"] for e in mine] == [ep["id"]], mine  # no second endpoint
    if ep["id"] != before["id"]:
        assert tb.api("GET", f"/containers/{before['id']}").status_code == 404
        old_mac = str(before["mac"]).lower()
        tb.wait_until(lambda: any(ep["mac"] in line for line in tb.flows(ep["host"])), 10,
                      f"no flow of {name}'s MAC {ep['mac']}")  # the check below can see MACs
        tb.wait_until(lambda: not any(old_mac in line for host in tb.hosts
                                      for line in tb.flows(host)), 10,
                      f"flows of {name}'s old MAC {old_mac} left")
    return ep


def test_network_create_inspect_remove(lab: Lab):
    tb, d1 = lab.tb, lab.d1
    d1.ok("network", "create", *NET, "--subnet", "10.20.0.0/24", "web")
    assert "daolinet" in d1.ok("network", "ls", "--filter", "name=web")
    ipam = d1.inspect("web")["IPAM"]
    assert ipam["Driver"] == "daolinet"
    assert ipam["Config"][0]["Subnet"] == "10.20.0.0/24"
    # The plugin creates the daolinet network right after Docker's (in the background).
    net = tb.wait_until(lambda: _network(tb, "web"), 10, "web not at API")
    assert (net["subnet"], net["gateway"]) == ("10.20.0.0/24", "10.20.0.1")

    d1.ok("network", "create", *NET, "--subnet", "172.30.5.0/24", "--gateway", "172.30.5.254",
          "scratch")
    net = tb.wait_until(lambda: tb.api("GET", "/networks/scratch").json().get("gateway"), 10,
                        "scratch not at API")
    assert net == "172.30.5.254"
    d1.ok("network", "rm", "scratch")
    assert tb.api("GET", "/networks/scratch").status_code == 404
    assert "scratch" not in d1.ok("network", "ls")


def test_overlapping_subnet_refused_with_docker_text(lab: Lab):
    d1 = lab.d1
    d1.ok("network", "create", *NET, "--subnet", "10.30.0.0/16", "api")
    lab.tb.wait_until(lambda: lab.tb.api("GET", "/networks/api").status_code == 200, 10,
                      "api not at API")
    r = d1.cli("network", "create", *NET, "--subnet", "10.30.1.0/24", "other")
    assert r.returncode != 0
    assert "daolinet: subnet 10.30.1.0/24 overlaps network api (10.30.0.0/16)" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = d1.cli("network", "create", "-d", "daolinet", "--subnet", "10.31.0.0/24", "noipam")
    assert r.returncode != 0 and "daolinet: " in r.stderr and "--ipam-driver daolinet" in r.stderr
    r = d1.cli("network", "create", *NET, "nosubnet")
    assert r.returncode != 0 and "daolinet: give the network a subnet" in r.stderr
    d1.ok("network", "rm", "api")


def test_containers_on_two_hosts_ping_and_tcp(lab: Lab):
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    # Networks are global: h2's engine gets web from the controller by itself.
    tb.wait_until(lambda: "web" in d2.ok("network", "ls", "--format", "{{.Name}}").split(),
                  10, "web did not appear in h2's Docker engine")
    assert d2.inspect("web")["IPAM"]["Config"][0]["Subnet"] == "10.20.0.0/24"
    cid1 = d1.run("c1", "web")
    d2.run("c2", "web")
    e1, e2 = _named(tb, "c1"), _named(tb, "c2")
    assert (e1["host"], e2["host"]) == ("h1", "h2")
    assert e1["docker_id"] == cid1
    assert _endpoint(tb, cid1[:12])["name"] == "c1"  # known by Docker id too
    ip1 = d1.inspect("c1")["NetworkSettings"]["Networks"]["web"]["IPAddress"]
    assert ip1 == e1["ip"]
    assert d1.inspect("c1")["NetworkSettings"]["Networks"]["web"]["MacAddress"] == e1["mac"]
    ns1, ns2 = d1.attach_netns("c1"), d2.attach_netns("c2")
    p3 = tb.container("h3", "p3", "web")
    # the driver turned tx checksum offload off before Docker moved the veth in
    assert re.search(r"^tx-checksumming: off", tb.exec(ns1, "ethtool", "-k", "eth0").stdout,
                     re.M)
    assert tb.ping(ns1, e2["ip"], count=2)
    assert tb.ping(ns2, p3.ip, count=2)
    assert tb.ping(p3, e1["ip"], count=2)
    assert tb.tcp_ok(ns1, ns2)
    assert tb.tcp_ok(p3, ns1)
    # daolictl shows Docker's name and id
    out = subprocess.run(
        [str(BIN_DIR / "daolictl"), "container", "show", "c1"], capture_output=True, text=True,
        env={"DAOLINET_URL": tb.api_url, "DAOLINET_TOKEN": tb.token}, timeout=30, check=False,
    )
    assert out.returncode == 0 and cid1 in out.stdout, out.stderr
    # the network cannot go while c1 is attached
    r = d1.cli("network", "rm", "web")
    assert r.returncode != 0 and "active endpoints" in r.stderr


def test_fixed_ip_and_address_reuse(lab: Lab):
    tb, d1 = lab.tb, lab.d1
    before_ports, before_links = _ports(tb, "h1"), _links(tb, "h1")
    d1.run("fixed", "web", "--ip", "10.20.0.9")
    ep = _named(tb, "fixed")
    assert ep["ip"] == "10.20.0.9"
    r = d1.cli("run", "-d", "--name", "dup", "--network", "web", "--ip", "10.20.0.9",
               "dltest-busybox", "sleep", "60")
    assert r.returncode != 0 and "daolinet: ip 10.20.0.9 is already used by container fixed" \
        in r.stderr
    d1.cli("rm", "-f", "dup")
    d1.ok("rm", "-f", "fixed")
    # Held while the container exists (a stop), freed once it is gone.
    tb.wait_until(lambda: _endpoint(tb, "fixed") is None, 20, "endpoint not removed")
    tb.wait_until(lambda: _ports(tb, "h1") == before_ports, 10, "OVS port left")
    assert _links(tb, "h1") == before_links
    tb.wait_until(lambda: "10.20.0.9" not in " ".join(tb.kernel_routes("h1")), 10,
                  "local route of 10.20.0.9 left")
    d1.run("again", "web", "--ip", "10.20.0.9")
    assert _named(tb, "again")["ip"] == "10.20.0.9"
    again = _named(tb, "again")
    d1.ok("stop", "-t", "0", "again")
    tb.wait_until(lambda: _ports(tb, "h1") == before_ports, 10, "stop left the port")
    assert _endpoint(tb, "again") == again  # its address is held for it
    d1.ok("start", "again")
    tb.wait_until(lambda: len(_ports(tb, "h1")) == len(before_ports) + 1, 10, "not plugged")
    _restarted(tb, d1, again)  # same address and name, one endpoint
    d1.ok("rm", "-f", "again")
    tb.wait_until(lambda: _endpoint(tb, "again") is None, 20, "rm did not free the address")
    assert _ports(tb, "h1") == before_ports


def test_agent_restart_while_containers_run(lab: Lab):
    tb, d1 = lab.tb, lab.d1
    c1, p3 = _named(tb, "c1"), tb.containers["p3"]
    before = _ports(tb, "h1")
    tb.restart_agent("h1")
    assert _ports(tb, "h1") == before
    assert tb.ping(p3, c1["ip"], count=2)
    d1.run("late", "web")  # the plugin answers again
    late = _named(tb, "late")
    assert tb.ping(p3, late["ip"], count=2)
    d1.ok("rm", "-f", "late")
    tb.wait_until(lambda: _ports(tb, "h1") == before, 10, "port of late left")
    tb.wait_until(lambda: _endpoint(tb, "late") is None, 20, "endpoint of late left")


def test_dockerd_restart_leaves_nothing_stale(lab: Lab):
    tb, d2 = lab.tb, lab.d2
    c2 = _named(tb, "c2")
    d2.run("tmp2", "web")
    tmp2 = _named(tb, "tmp2")
    d2.stop()  # stops its containers: their addresses are held, their ports go
    tb.wait_until(lambda: _ports(tb, "h2") == [], 20, "ports of stopped containers left")
    assert [x for x in _links(tb, "h2") if x.startswith(("dl", "dlt"))] == []
    assert (_endpoint(tb, "c2"), _endpoint(tb, "tmp2")) == (c2, tmp2)
    d2.start()
    d2.ok("rm", "-f", "tmp2")
    tb.wait_until(lambda: _endpoint(tb, "tmp2") is None, 20, "endpoint of tmp2 left")
    tb.wait_until(lambda: tmp2["ip"] not in " ".join(tb.kernel_routes("h2")), 10,
                  "route of tmp2 left")
    d2.ok("start", "c2")
    c2 = _restarted(tb, d2, c2)  # same address and name, one endpoint
    assert d2.inspect("c2")["NetworkSettings"]["Networks"]["web"]["IPAddress"] == c2["ip"]
    assert tb.ping(tb.containers["p3"], c2["ip"], count=2)
    assert len(_ports(tb, "h2")) == 1


def test_host_reboot_brings_restart_policy_containers_back(lab: Lab):
    """A power loss of h2: dockerd starts again before the agent, which systemd socket
    activation starts at dockerd's first plugin request (the agent takes the listening
    socket); the `--restart always` container comes back with the same address and
    name (on a new endpoint if Docker gave it a new MAC), reachable from h3, and
    nothing stale is left."""
    tb, d2 = lab.tb, lab.d2
    d2.run("keep", "web", "--restart", "always")
    keep = _named(tb, "keep")
    c2 = _named(tb, "c2")
    p3 = tb.containers["p3"]
    assert tb.ping(p3, keep["ip"], count=2)
    d2.crash()
    tb.stop_agent("h2", sig=signal.SIGKILL)
    tb.start_agent("h2", on_demand=True, wait=False)
    started = time.monotonic()
    d2.start(timeout=90)  # its restore waits for the plugin, which starts the agent
    def state() -> str:
        info = d2.cli("inspect", "-f", "{{json .State}} {{json .NetworkSettings.Networks}}",
                      "keep").stdout
        return (f"keep: {info}\n--- agent ---\n{tail(tb.host('h2').agent_log, 40)}"
                f"\n--- dockerd ---\n{tail(d2.log, 30)}")

    tb.wait_until(
        lambda: d2.inspect("keep")["State"]["Running"]
        and d2.inspect("keep")["NetworkSettings"]["Networks"]["web"]["IPAddress"]
        == keep["ip"], 60, "keep did not come back with its address", detail=state)
    assert tb.wait_until(lambda: tb.ping(p3, keep["ip"], count=1), 30, "keep not reachable")
    print(f"\nreboot: keep answered {time.monotonic() - started:.1f} s after dockerd started")
    _restarted(tb, d2, keep)  # same address and name, one endpoint
    assert _endpoint(tb, "c2") == c2  # stopped by the crash, no restart policy: held
    on_h2 = [e for e in tb.api_json("GET", "/containers") if e["host"] == "h2"]
    assert sorted(e["name"] for e in on_h2) == ["c2", "keep"]  # no docker-<id> beside
    tb.wait_until(lambda: len(_ports(tb, "h2")) == 1, 10, "stale port left")
    d2.ok("start", "c2")
    _restarted(tb, d2, c2)
    assert tb.ping(p3, c2["ip"], count=2)
    d2.ok("rm", "-f", "keep")
    tb.wait_until(lambda: _endpoint(tb, "keep") is None, 20, "endpoint of keep left")


def test_move_keeps_ip_and_mac(lab: Lab):
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    d1.run("mover", "web", "-e", "ROLE=mover", "--restart", "unless-stopped",
           "--memory", "64m", "--hostname", "mover-1", cmd=("sleep", "3600"))
    ep = _named(tb, "mover")
    p3 = tb.containers["p3"]
    assert tb.ping(p3, ep["ip"], count=2)
    interval = 0.02
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", p3.ns, "ping", "-D", "-n", "-i", str(interval), "-W", "1",
         "-w", "8", ep["ip"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        time.sleep(1.0)
        started = time.monotonic()
        out = subprocess.run(
            [str(BIN_DIR / "daolictl"), "container", "move", "mover", "--host", "h2", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
            env={"DAOLINET_URL": tb.api_url, "DAOLINET_TOKEN": tb.token},
        )
        took = time.monotonic() - started
        assert out.returncode == 0, f"{out.stderr}\n{tail(tb.hosts['h2'].agent_log, 30)}"
        output, _ = pinger.communicate(timeout=30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    moved = _endpoint(tb, "mover")
    assert moved is not None
    assert (moved["host"], moved["ip"], moved["mac"], moved["id"]) == \
        ("h2", ep["ip"], ep["mac"], ep["id"])
    info = d2.inspect("mover")
    assert info["Config"]["Env"] and "ROLE=mover" in info["Config"]["Env"]
    assert info["Config"]["Cmd"] == ["sleep", "3600"]
    # what the move keeps besides the command line (hostnet/docker/move.py, Kept)
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert info["HostConfig"]["Memory"] == 64 << 20
    assert info["Config"]["Hostname"] == "mover-1"
    assert info["NetworkSettings"]["Networks"]["web"]["IPAddress"] == ep["ip"]
    assert info["NetworkSettings"]["Networks"]["web"]["MacAddress"] == ep["mac"]
    tb.wait_until(lambda: moved["docker_id"] == info["Id"] or
                  _endpoint(tb, "mover")["docker_id"] == info["Id"], 10, "docker id not updated")
    assert d1.cli("inspect", "mover").returncode != 0  # the old one is gone
    assert tb.ping(p3, ep["ip"], count=2)
    ns = d2.attach_netns("mover")
    assert tb.tcp_ok(p3, ns)
    lost, gap_ms = ping_gap(output, interval)
    print(f"\nmove: {took * 1000:.0f} ms for the move, peer lost {lost} pings "
          f"(every {interval * 1000:.0f} ms), longest gap {gap_ms:.0f} ms")
    assert lost < 8 / interval  # the peer got replies again after the move


def test_move_refuses_what_cannot_move(lab: Lab):
    """A container on two daolinet networks with a volume: the move is refused before
    anything starts, naming both reasons, and the container stays as it was."""
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    d1.ok("network", "create", *NET, "--subnet", "10.23.0.0/24", "second")
    tb.wait_until(lambda: _network(tb, "second"), 10, "second not at API")
    try:
        d1.run("keeper", "web", "-v", "keeperdata:/data")
        d1.ok("network", "connect", "second", "keeper")
        ep = _named(tb, "keeper")
        out = subprocess.run(
            [str(BIN_DIR / "daolictl"), "container", "move", "keeper", "--host", "h2"],
            capture_output=True, text=True, timeout=60, check=False,
            env={"DAOLINET_URL": tb.api_url, "DAOLINET_TOKEN": tb.token},
        )
        assert out.returncode != 0, out.stdout
        assert "on 2 networks (second, web)" in out.stderr, out.stderr
        assert "keeps data in volume keeperdata at /data" in out.stderr, out.stderr
        # nothing started on h2, nothing changed on h1 or at the controller
        assert d2.cli("inspect", "keeper").returncode != 0
        assert d1.inspect("keeper")["State"]["Running"]
        assert _endpoint(tb, "keeper") == ep
        assert tb.ping(tb.containers["p3"], ep["ip"], count=2)
    finally:
        d1.cli("rm", "-f", "keeper")
        d1.cli("volume", "rm", "keeperdata")
        d1.cli("network", "rm", "second")


def test_no_leftovers_after_removal(lab: Lab):
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    for d in (d1, d2):
        ids = d.cli("ps", "-aq").stdout.split()
        if ids:
            d.ok("rm", "-f", *ids)
    tb.detach("p3")
    tb.wait_until(lambda: tb.api_json("GET", "/containers") == [], 15, "endpoints left")
    for host in ("h1", "h2"):
        assert _ports(tb, host) == []
    d1.ok("network", "rm", "web")  # deletes the daolinet network: no container left
    # h2's agent removes its engine's copy by itself once the daolinet network is gone
    # (reconcile.py); this rm may come before or after it.
    r = d2.cli("network", "rm", "web")
    assert r.returncode == 0 or "No such network" in r.stderr, r.stderr
    tb.wait_until(lambda: "web" not in d2.ok("network", "ls", "--format", "{{.Name}}").split(),
                  10, "web left in h2's engine")
    tb.wait_until(lambda: tb.api("GET", "/networks/web").status_code == 404, 10,
                  "web left at the API", detail=lambda: (
                      f"{tb.api('GET', '/networks/web').text}\n--- h1 ---\n"
                      f"{tail(tb.host('h1').agent_log, 15)}\n--- h2 ---\n"
                      f"{tail(tb.host('h2').agent_log, 15)}"))
