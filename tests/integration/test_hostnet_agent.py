"""End to end on one machine: OVS (netdev) + a fake controller + the real agent + the CLI.

Everything runs inside namespaces made here (`dlthn-*`), the controller listens on
the namespace's loopback, addresses are from 198.18.0.0/15.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="needs Open vSwitch"),
]

HERE = Path(__file__).parent
PY = sys.executable
PORT = 18765


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed: {proc.stderr}")
    return proc.stdout


def wait_for(pred: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Lab:
    ns: str
    ctr_ns: str
    run: Path
    db: str
    state: Path
    token: Path

    def vsctl(self, *args: str) -> str:
        return sh("ovs-vsctl", f"--db={self.db}", *args)

    def nsrun(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns, *args, check=check)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-c", "from hostnet.main import run; run()", *args,
             "--socket", str(self.run / "hostnet.sock")],
            capture_output=True, text=True, check=False, cwd=HERE.parent.parent,
        )

    def seen(self) -> dict:
        try:
            return json.loads(self.state.read_text())
        except (OSError, ValueError):
            return {}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:6]
    ns, ctr = f"dlthn-ag-{tag}", f"dlthn-ct-{tag}"
    run = tmp_path / "run"
    run.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, OVS_RUNDIR=str(run), OVS_DBDIR=str(run), OVS_LOGDIR=str(run))
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "netns", "add", ctr)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # an underlay stand-in so `via 198.18.7.12` routes have an on-link next hop
        sh("ip", "-n", ns, "link", "add", "dlul0", "type", "veth", "peer", "name", "dlul1")
        sh("ip", "-n", ns, "addr", "add", "198.18.7.1/24", "dev", "dlul0")
        sh("ip", "-n", ns, "link", "set", "dlul0", "up")
        sh("ip", "-n", ns, "link", "set", "dlul1", "up")
        sh("ovsdb-tool", "create", str(run / "conf.db"),
           "/usr/share/openvswitch/vswitch.ovsschema")
        db = f"unix:{run}/db.sock"
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, "ovsdb-server", str(run / "conf.db"),
             f"--remote=punix:{run}/db.sock", f"--unixctl={run}/ovsdb.ctl",
             f"--pidfile={run}/ovsdb.pid", f"--log-file={run}/ovsdb.log"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: (run / "db.sock").exists(), what="ovsdb-server")
        sh("ovs-vsctl", f"--db={db}", "--no-wait", "init", env=env)
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, "ovs-vswitchd", db, f"--unixctl={run}/vswitchd.ctl",
             f"--pidfile={run}/vswitchd.pid", f"--log-file={run}/vswitchd.log"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: (run / "vswitchd.ctl").exists(), what="ovs-vswitchd")
        state = tmp_path / "controller.json"
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, PY, str(HERE / "test_hostnet_fakectl.py"),
             str(PORT), str(state)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        token = tmp_path / "token"
        token.write_text("it-token\n")
        lab = Lab(ns, ctr, run, db, state, token)
        wait_for(lambda: f"127.0.0.1:{PORT}" in lab.nsrun("ss", "-ltn", check=False),
                 what="fake controller")
        yield lab
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in (ctr, ns):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def start_agent(lab: Lab, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.ns, PY, "-c", "from hostnet.main import run; run()",
         "agent", "--controller", f"http://127.0.0.1:{PORT}", "--token-file", str(lab.token),
         "--host", "h1", "--ovsdb", lab.db, "--socket", str(lab.run / "hostnet.sock"),
         "--datapath-type", "netdev", "--connect-timeout", "10", "--plugin-socket", "",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=HERE.parent.parent,
    )


def stop(agent: subprocess.Popen[str]) -> tuple[int, str]:
    agent.send_signal(signal.SIGTERM)
    try:
        _, err = agent.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        agent.kill()
        _, err = agent.communicate()
    return agent.returncode, err


def test_agent_end_to_end(lab: Lab):
    # an orphan: a daolinet port whose endpoint the controller does not know
    lab.nsrun("ip", "link", "add", "dlorph0", "type", "veth", "peer", "name", "dlorph1")
    lab.vsctl("add-br", "br-dl", "--", "set", "bridge", "br-dl", "datapath_type=netdev")
    lab.vsctl("add-port", "br-dl", "dlorph0", "--", "set", "Interface", "dlorph0",
              "external_ids:daolinet-endpoint=ep-gone")
    agent = start_agent(lab)
    try:
        sock = lab.run / "hostnet.sock"
        wait_for(lambda: sock.exists() or agent.poll() is not None, what="agent socket")
        assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
        assert oct(sock.stat().st_mode & 0o777) == "0o660"

        # registration and bridge settings
        reg = lab.seen()["registrations"][0]
        assert reg == {"name": "h1", "address": "127.0.0.1", "site": "default"}
        assert lab.vsctl("get", "bridge", "br-dl", "fail_mode").strip() == "secure"
        assert lab.vsctl("get", "bridge", "br-dl", "other-config:datapath-id").strip() \
            .strip('"') == "00000000000000d1"
        assert lab.vsctl("get-controller", "br-dl").split() == ["tcp:127.0.0.1:6699"]
        # a restarted controller is retried every second, not after OVS's 8 s backoff
        assert lab.vsctl("--bare", "--columns=max_backoff", "find", "Controller",
                         "target=\"tcp:127.0.0.1:6699\"").split() == ["1000"]
        assert "dlorph0" not in lab.vsctl("list-ports", "br-dl").split()
        assert "dlorph0" not in lab.nsrun("ip", "-br", "link")

        # the stream: snapshot, delta, then a delta that fails -> nack
        wait_for(lambda: len(lab.seen().get("acks", [])) >= 3, what="3 acks")
        acks = lab.seen()["acks"]
        assert acks[0] == {"type": "ack", "seq": 1}
        assert acks[1] == {"type": "ack", "seq": 2}
        assert acks[2]["type"] == "nack" and acks[2]["seq"] == 3 and acks[2]["error"]
        routes = lab.nsrun("ip", "route", "show", "proto", "211")
        assert "198.19.7.7 via 198.18.7.12" in routes
        assert "198.19.7.6" not in routes

        # attach via the CLI
        r = lab.cli("attach", "--netns", lab.ctr_ns, "--network", "blue", "--name", "web1")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "attached web1 ip=198.18.5.5 mac=02:da:c6:12:05:05 port=dlitweb1\n"
        port = r.stdout.split("port=")[1].strip()
        assert port in lab.vsctl("list-ports", "br-dl").split()
        assert lab.vsctl("get", "Interface", port, "external_ids:daolinet-endpoint").strip() \
            .strip('"') == "ep-it-web1"
        addr = sh("ip", "-n", lab.ctr_ns, "-j", "addr", "show", "dev", "eth0")
        assert '"198.18.5.5"' in addr and '"mtu":1450' in addr

        # errors are one line, exit 1
        r = lab.cli("attach", "--netns", "dlthn-missing", "--network", "blue")
        assert r.returncode == 1
        assert r.stderr.strip() == \
            "daolinet-hostnet: error: network namespace dlthn-missing does not exist"
        r = lab.cli("attach", "--netns", lab.ctr_ns, "--network", "red", "--name", "web2")
        assert (r.returncode, r.stderr.strip()) == (1, "daolinet-hostnet: error: no network red")

        # detach
        r = lab.cli("detach", "web1")
        assert (r.returncode, r.stdout) == (0, "detached web1\n"), r.stderr
        assert port not in lab.vsctl("list-ports", "br-dl").split()
        assert "eth0" not in sh("ip", "-n", lab.ctr_ns, "-br", "link")
        assert lab.seen()["deleted"] == ["ep-it-web1"]
    finally:
        rc, err = stop(agent)
    assert rc == 0, err
    assert not (lab.run / "hostnet.sock").exists()
    assert "Traceback" not in err
    # routes stay in place for the running containers
    assert "198.19.7.7" in lab.nsrun("ip", "route", "show", "proto", "211")


def test_agent_restart_keeps_controller_connection_setting(lab: Lab):
    agent = start_agent(lab)
    try:
        wait_for(lambda: len(lab.seen().get("acks", [])) >= 1, what="first ack")
    finally:
        assert stop(agent)[0] == 0
    uuid_before = lab.vsctl("get", "bridge", "br-dl", "controller").strip()
    agent = start_agent(lab)
    try:
        wait_for(lambda: len(lab.seen().get("registrations", [])) >= 2, what="re-registration")
        time.sleep(0.5)
        # set-controller was not called again: the Controller row is the same
        assert lab.vsctl("get", "bridge", "br-dl", "controller").strip() == uuid_before
    finally:
        assert stop(agent)[0] == 0


def test_unreachable_controller_exits_with_one_line(lab: Lab):
    agent = subprocess.run(
        ["ip", "netns", "exec", lab.ns, PY, "-c", "from hostnet.main import run; run()",
         "agent", "--controller", "http://127.0.0.1:9", "--token-file", str(lab.token),
         "--host", "h1", "--ovsdb", lab.db, "--socket", str(lab.run / "x.sock"),
         "--datapath-type", "netdev", "--connect-timeout", "1", "--plugin-socket", ""],
        capture_output=True, text=True, check=False, timeout=30, cwd=HERE.parent.parent,
    )
    assert agent.returncode == 1
    lines = agent.stderr.strip().splitlines()
    assert len(lines) == 1, agent.stderr
    assert "controller not reachable within 1s" in lines[0]
