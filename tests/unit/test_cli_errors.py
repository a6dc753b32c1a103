"""Every console script: --help works; a bad flag is one line on stderr, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = ["daolinet-controller", "daolinet-hostnet", "daolictl"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero(command: str) -> None:
    res = subprocess.run([BIN / command, "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_flag_is_one_line_and_exit_1(command: str) -> None:
    res = subprocess.run([BIN / command, "--no-such-flag"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "--no-such-flag" in lines[0] and "Traceback" not in res.stderr


def test_controller_bad_listen_address_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run(
        [BIN / "daolinet-controller", "--api", "127.0.0.1:99999", "--token-file",
         str(tmp_path / "t"), "--store", f"sqlite:///{tmp_path}/db"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == ["daolinet-controller: bad port in '127.0.0.1:99999'"]
