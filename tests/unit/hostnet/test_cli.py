"""CLI error paths and output (no privileges; a fake agent on a temp unix socket)."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from hostnet.main import app, main


class _Handler(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, object]]] = {}
    seen: ClassVar[list[tuple[str, object]]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        status, answer = self.answers[self.path]
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_agent(tmp_path: Path):
    path = tmp_path / "agent.sock"
    _Handler.answers = {}
    _Handler.seen = []
    srv = _Server(str(path), _Handler)
    # shutdown() waits for serve_forever's next poll: 0.5 s by default
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    t.start()
    try:
        yield path, _Handler
    finally:
        srv.shutdown()
        srv.server_close()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["attach", "--bogus"],
        ["attach", "--netns", "x"],
        ["nosuchcommand"],
        [],
        ["agent", "--controller", "http://x", "--token-file", "t", "--host", "h",
         "--ovsdb", "unix:/x", "--datapath-type", "nope"],
        ["agent", "--controller", "http://x", "--token-file", "t", "--host", "h",
         "--ovsdb", "unix:/x", "--connect-timeout", "soon"],
        ["detach"],
        ["detach", "a", "--name", "b"],
    ],
)
def test_usage_errors_are_one_line_exit_1(argv, capsys):
    assert main(argv) == 1
    assert one_error_line(capsys).startswith("daolinet-hostnet: error: ")


def test_agent_tls_files_go_together(tmp_path, capsys):
    argv = ["agent", "--controller", "http://127.0.0.1:9", "--token-file", "t", "--host", "h",
            "--ovsdb", "unix:/nonexistent", "--tls-ca", "/pki/ca.crt", "--tls-key", "/k"]
    assert main(argv) == 1
    assert one_error_line(capsys).endswith(
        "--tls-ca, --tls-cert and --tls-key go together (given: --tls-ca, --tls-key)")


def test_unreachable_agent_is_one_line(tmp_path, capsys):
    sock = tmp_path / "none.sock"
    assert main(["attach", "--netns", "x", "--network", "n", "--socket", str(sock)]) == 1
    assert f"cannot reach the agent at {sock}" in one_error_line(capsys)
    assert main(["detach", "web", "--socket", str(sock)]) == 1
    one_error_line(capsys)


def test_agent_bad_token_file_is_one_line(tmp_path, capsys):
    argv = ["agent", "--controller", "http://127.0.0.1:9", "--token-file",
            str(tmp_path / "missing"), "--host", "h", "--ovsdb", "unix:/nonexistent",
            "--socket", str(tmp_path / "a.sock")]
    assert main(argv) == 1
    assert "cannot read token file" in one_error_line(capsys)


@pytest.mark.parametrize("argv", [["--help"], ["agent", "--help"], ["attach", "--help"],
                                  ["detach", "--help"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage" in capsys.readouterr().out


def test_attach_prints_one_line(fake_agent, capsys):
    path, handler = fake_agent
    handler.answers["/v1/attach"] = (200, {"name": "web", "ip": "10.1.0.5",
                                           "mac": "02:da:0a:01:00:05", "port": "dlep1"})
    rc = main(["attach", "--netns", "ns1", "--network", "blue", "--name", "web",
               "--ip", "10.1.0.5", "--socket", str(path)])
    assert rc == 0
    assert capsys.readouterr().out == "attached web ip=10.1.0.5 mac=02:da:0a:01:00:05 port=dlep1\n"
    assert handler.seen == [("/v1/attach", {"netns": "ns1", "network": "blue",
                                            "ip": "10.1.0.5", "name": "web"})]


def test_attach_json(fake_agent, capsys):
    path, handler = fake_agent
    handler.answers["/v1/attach"] = (200, {"name": "web", "ip": "10.1.0.5"})
    assert main(["attach", "--netns", "n", "--network", "b", "--json",
                 "--socket", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "web", "ip": "10.1.0.5"}


def test_agent_error_detail_is_shown(fake_agent, capsys):
    path, handler = fake_agent
    handler.answers["/v1/attach"] = (400, {"detail": "network namespace n does not exist"})
    assert main(["attach", "--netns", "n", "--network", "b", "--socket", str(path)]) == 1
    assert one_error_line(capsys) == \
        "daolinet-hostnet: error: network namespace n does not exist"


def test_detach_by_argument_or_option(fake_agent, capsys):
    path, handler = fake_agent
    handler.answers["/v1/detach"] = (200, {"detached": "web"})
    assert main(["detach", "web", "--socket", str(path)]) == 0
    assert main(["detach", "--name", "web", "--socket", str(path)]) == 0
    assert capsys.readouterr().out == "detached web\ndetached web\n"
    assert [b for _, b in handler.seen] == [{"name": "web"}, {"name": "web"}]


def test_cli_runner_help():
    result = CliRunner().invoke(app, ["attach", "--help"])
    assert result.exit_code == 0
    assert "--netns" in result.output
