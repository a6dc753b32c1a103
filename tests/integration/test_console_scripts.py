"""The console scripts in real processes: every script's --help works and a bad flag is
one line on stderr, exit 1; daolictl's entry point gives one line, exit 1, when the API
cannot be reached, and does its work against a real API server.

These start Python processes that each spend seconds importing (more on a loaded
machine), so they live here and not in the unit layer, which tests the same commands
in-process (tests/unit/daolictl/).  All the processes start at once: side by side they
take about the time of the slowest.  No root needed (loopback only).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.daolictl.support import Api, served_api

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
TOKEN = "console-token"
COMMANDS = ["daolinet-controller", "daolinet-hostnet", "daolictl"]
PROCESS_ARGS = {"help": ["--help"], "bad-flag": ["--no-such-flag"]}
DAOLICTL = [sys.executable, "-c", "from controller.daolictl.commands import run; run()"]

Done = dict[tuple[str, str], subprocess.CompletedProcess[str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with served_api(tmp_path_factory.mktemp("console") / "cli.db", TOKEN) as served:
        yield served


@pytest.fixture(scope="module")
def processes(api: Api) -> Done:
    """Every console script with every PROCESS_ARGS, and daolictl's entry point against
    no API and against `api`, all started at once."""
    env = dict(os.environ)

    def daolictl(url: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*DAOLICTL, *args], env={**env, "DAOLINET_URL": url, "DAOLINET_TOKEN": TOKEN},
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    started: dict[tuple[str, str], subprocess.Popen[str]] = {
        (command, case): subprocess.Popen(
            [BIN / command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in COMMANDS
        for case, args in PROCESS_ARGS.items()
    }
    started["daolictl", "unreachable"] = daolictl(
        f"http://127.0.0.1:{free_port()}", "host", "list")
    started["daolictl", "create"] = daolictl(
        api.url, "network", "create", "ok", "10.7.0.0/24", "--json")
    done: Done = {}
    try:
        for key, proc in started.items():
            out, err = proc.communicate(timeout=60)
            done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero(processes: Done, command: str) -> None:
    res = processes[command, "help"]
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_flag_is_one_line_and_exit_1(processes: Done, command: str) -> None:
    res = processes[command, "bad-flag"]
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "--no-such-flag" in lines[0] and "Traceback" not in res.stderr


def test_real_process_no_traceback(processes: Done) -> None:
    """The console entry point, in a real process: one line on stderr, exit 1, when the
    API is not there; the command done when it is."""
    p = processes["daolictl", "unreachable"]
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith("error: cannot reach the daolinet API")
    p = processes["daolictl", "create"]
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["subnet"] == "10.7.0.0/24"
