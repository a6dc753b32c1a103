"""Agent pieces that need no privileges: stream handling, socket, retry, ovs commands."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hostnet.agent import config as config_mod
from hostnet.agent import servers
from hostnet.agent.client import ControllerClient, stream_url
from hostnet.agent.config import AgentConfig, AgentStartupError, read_token
from hostnet.agent.names import NamesTable
from hostnet.agent.registration import Registrar, next_backoff
from hostnet.agent.servers import bind_unix_socket, systemd_socket
from hostnet.agent.stream import StateApplier
from hostnet.agent.tunnel import Tunnel
from hostnet.host.nat import NatTable
from hostnet.host.netlink import NetlinkError, set_sysctls, sysctl_settings
from hostnet.host.ovs import Ovs, _parse_ovs_value
from hostnet.host.routes import SnapshotPlan


class FakeTable:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail = fail

    def apply_snapshot(self, routes):
        self.calls.append(("snapshot", [str(r.dst) for r in routes]))
        if self.fail:
            raise self.fail
        return SnapshotPlan()

    def apply_delta(self, add, remove):
        self.calls.append(("delta", ([str(r.dst) for r in add], [str(r.dst) for r in remove])))
        if self.fail:
            raise self.fail

    def close(self):
        pass


def no_tunnel() -> Tunnel:
    pool = ThreadPoolExecutor(1)
    return Tunnel("h1", None, host_exec=pool, route_exec=pool, key_switch_delay=0.5)


def make_applier(table: FakeTable) -> StateApplier:
    return StateApplier(table, NatTable(), no_tunnel(), NamesTable())  # type: ignore[arg-type]


def test_handle_messages_ack_in_order():
    table = FakeTable()
    ag = make_applier(table)

    def go():
        snap = {"type": "snapshot", "seq": 1, "routes": [
            {"kind": "via", "dst": "10.1.0.6", "via": "198.18.0.12"},
            {"kind": "local", "dst": "10.1.0.5", "lladdr": "02:da:0a:01:00:05"}]}
        delta = {"type": "delta", "seq": 2, "add": [
            {"kind": "via", "dst": "10.1.0.7", "via": "198.18.0.12"}],
            "remove": [{"kind": "via", "dst": "10.1.0.6", "via": "198.18.0.12"}]}
        return [ag.apply(snap), ag.apply(delta)]

    assert go() == [{"type": "ack", "seq": 1}, {"type": "ack", "seq": 2}]
    assert table.calls == [("snapshot", ["10.1.0.6", "10.1.0.5"]),
                           ("delta", (["10.1.0.7"], ["10.1.0.6"]))]


def test_handle_message_nacks_errors():
    err = NetlinkError("route replace 10.1.0.6/32 via x: Network is unreachable")
    ag = make_applier(FakeTable(fail=err))

    def go():
        bad = ag.apply({"type": "delta", "seq": 3, "add": [{"kind": "via"}]})
        failing = ag.apply({"type": "snapshot", "seq": 4, "routes": []})
        ignored = ag.apply({"type": "hello"})
        return bad, failing, ignored

    bad, failing, ignored = go()
    assert bad is not None and bad["type"] == "nack" and bad["seq"] == 3
    assert failing == {"type": "nack", "seq": 4,
                       "error": "route replace 10.1.0.6/32 via x: Network is unreachable"}
    assert ignored is None


def test_registration_gives_up_after_connect_timeout(tmp_path):
    # a closed loopback port: connection refused, retried until the timeout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = AgentConfig(controller=f"http://127.0.0.1:{port}", token_file=tmp_path / "t",
                      host="h1", ovsdb="unix:/x", address="127.0.0.1", connect_timeout=0.6,
                      datapath_type="netdev")

    async def go():
        client = ControllerClient(cfg.controller, "tok")
        with ThreadPoolExecutor(1) as pool:
            tunnel = Tunnel("h1", None, host_exec=pool, route_exec=pool, key_switch_delay=0.5)
            registrar = Registrar(cfg, client, Ovs(cfg.ovsdb), "netdev", tunnel, host_exec=pool)
            try:
                await registrar.register_with_retry()
            finally:
                await client.aclose()

    loop_start = asyncio.new_event_loop()
    t0 = loop_start.time()
    with pytest.raises(AgentStartupError, match=r"not reachable within 0.6s"):
        loop_start.run_until_complete(go())
    assert 0.5 < loop_start.time() - t0 < 5
    loop_start.close()


def test_read_token(tmp_path):
    p = tmp_path / "token"
    p.write_text("  s3cret\n")
    assert read_token(p) == "s3cret"
    p.write_text("\n")
    with pytest.raises(AgentStartupError, match="empty"):
        read_token(p)
    with pytest.raises(AgentStartupError, match="cannot read token file"):
        read_token(tmp_path / "missing")


def test_backoff_sequence():
    seq = [0.2]
    for _ in range(8):
        seq.append(next_backoff(seq[-1]))
    assert seq[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert max(seq) == 5.0


def test_stream_url():
    assert stream_url("http://10.0.0.1:8080", "h1") == "ws://10.0.0.1:8080/api/v1/hosts/h1/stream"
    assert stream_url("https://c.example/x/", "h 1") == "wss://c.example/x/api/v1/hosts/h%201/stream"
    with pytest.raises(ValueError):
        stream_url("ftp://x", "h")


def test_bind_unix_socket_replaces_stale_and_sets_mode(tmp_path):
    path = tmp_path / "sub" / "hostnet.sock"
    s1 = bind_unix_socket(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    s1.close()  # file stays: stale
    s2 = bind_unix_socket(path)
    s2.listen(1)
    try:
        with pytest.raises(AgentStartupError, match="already serving"):
            bind_unix_socket(path)
    finally:
        s2.close()
    path.unlink()
    path.write_text("x")
    with pytest.raises(AgentStartupError, match="not a socket"):
        bind_unix_socket(path)


def test_systemd_socket_is_taken_only_for_its_path(tmp_path, monkeypatch):
    """Socket activation (sd_listen_fds): the socket systemd passed for the plugin's
    path is served as it is; another path's, or one meant for another process, is not."""
    path = tmp_path / "daolinet.sock"
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(path))
    listening.listen(4)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        monkeypatch.setattr(servers, "SD_LISTEN_FDS_START", listening.fileno())
        monkeypatch.setenv("LISTEN_FDS", "1")
        monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))  # another process's
        assert systemd_socket(path) is None
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        assert systemd_socket(tmp_path / "other.sock") is None
        assert listening.fileno() >= 0  # left open: not ours
        got = systemd_socket(path)
        assert got is not None and got.fileno() == listening.fileno()
        assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
        client.connect(str(path))  # what dockerd does before the agent serves
        conn, _ = got.accept()
        conn.close()
        got.detach()  # `listening` closes it
    finally:
        client.close()
        listening.close()


def test_sysctls(tmp_path):
    settings = sysctl_settings("br-dl")
    assert settings["net/ipv4/ip_forward"] == "1"
    for dev in ("all", "default", "br-dl"):
        assert settings[f"net/ipv4/conf/{dev}/rp_filter"] == "0"
        assert settings[f"net/ipv4/conf/{dev}/send_redirects"] == "0"
    for rel in settings:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("2\n")
    set_sysctls("br-dl", proc_sys=str(tmp_path))
    assert all((tmp_path / rel).read_text().strip() == v for rel, v in settings.items())
    with pytest.raises(NetlinkError, match=r"sysctl net\.ipv4\.ip_forward"):
        set_sysctls("br-dl", proc_sys=str(tmp_path / "nope"))


class RecordingOvs(Ovs):
    def __init__(self, controllers: list[str]) -> None:
        super().__init__("unix:/x")
        self.cmds: list[tuple[str, ...]] = []
        self.controllers = controllers

    def run(self, *args: str) -> str:
        self.cmds.append(args)
        if args[0] == "get-controller":
            return "".join(c + "\n" for c in self.controllers)
        return ""


def test_ensure_bridge_commands_and_no_controller_flap():
    ovs = RecordingOvs(["tcp:127.0.0.1:6653"])
    ovs.ensure_bridge("br-dl", "netdev", 0xABC, ["tcp:127.0.0.1:6653"])
    assert ovs.cmds[0] == (
        "--may-exist", "add-br", "br-dl", "--", "set", "Bridge", "br-dl",
        "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
        "other-config:disable-in-band=true", "other-config:datapath-id=0000000000000abc")
    assert ovs.cmds[1:] == [("get-controller", "br-dl")]  # same target: not touched
    ovs.cmds.clear()
    ovs.ensure_bridge("br-dl", "netdev", 1, ["tcp:10.0.0.1:6653"])
    assert ovs.cmds[-1] == (
        "--", "--id=@c0", "create", "Controller", 'target="tcp:10.0.0.1:6653"',
        "max_backoff=1000", "--", "set", "Bridge", "br-dl", "controller=[@c0]")


def test_parse_ovs_values():
    assert _parse_ovs_value(["map", [["daolinet-endpoint", "ep1"], ["k", "v"]]]) == {
        "daolinet-endpoint": "ep1", "k": "v"}
    assert _parse_ovs_value(["set", []]) == []
    assert _parse_ovs_value("dlep1") == "dlep1"


def test_ovs_errors_are_one_line(tmp_path):
    from hostnet.host.ovs import OvsError
    with pytest.raises(OvsError) as ei:
        Ovs(f"unix:{tmp_path}/none.sock", timeout=1).list_ports("br-dl")
    assert "\n" not in str(ei.value)
    with pytest.raises(OvsError, match="not found"):
        Ovs("unix:/x", vsctl="/nonexistent/ovs-vsctl").list_ports("br")


def test_module_default_socket():
    assert config_mod.DEFAULT_SOCKET == "/run/daolinet/hostnet.sock"


class SslOvs(Ovs):
    """ovs-vsctl's get-ssl / set-ssl, recorded."""

    def __init__(self, ssl: tuple[str, str, str] | None) -> None:
        super().__init__("unix:/x")
        self.ssl = ssl
        self.cmds: list[tuple[str, ...]] = []

    def run(self, *args: str) -> str:
        self.cmds.append(args)
        if args[0] == "get-ssl" and self.ssl is not None:
            key, cert, ca = self.ssl
            return (f"Private key: {key}\nCertificate: {cert}\nCA Certificate: {ca}\n"
                    "Bootstrap: false\n")
        return ""


def test_set_ssl_only_when_it_differs():
    files = (Path("/pki/host.key"), Path("/pki/host.crt"), Path("/pki/ca.crt"))
    unset = SslOvs(None)
    assert unset.set_ssl(*files) is True
    assert unset.cmds[-1] == ("set-ssl", "/pki/host.key", "/pki/host.crt", "/pki/ca.crt")
    same = SslOvs(("/pki/host.key", "/pki/host.crt", "/pki/ca.crt"))
    assert same.set_ssl(*files) is False  # an agent restart does not drop the connection
    assert same.cmds == [("get-ssl",)]
    other = SslOvs(("/old/host.key", "/pki/host.crt", "/pki/ca.crt"))
    assert other.set_ssl(*files) is True


def test_usable_targets_follow_the_agents_tls(caplog):
    from hostnet.agent.registration import usable_targets
    both = ["ssl:10.0.0.1:6653", "tcp:10.0.0.2:6653"]
    assert usable_targets(both, tls=True) == ["ssl:10.0.0.1:6653"]
    assert "ignoring OpenFlow target(s) tcp:10.0.0.2:6653" in caplog.text
    assert usable_targets(both, tls=False) == ["tcp:10.0.0.2:6653"]
    assert usable_targets(["tcp:10.0.0.2:6653"], tls=False) == ["tcp:10.0.0.2:6653"]
