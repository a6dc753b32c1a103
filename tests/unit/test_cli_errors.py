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


ETCD = "etcd://127.0.0.1:1"  # never reached: the options are checked before


@pytest.mark.parametrize(("args", "message"), [
    (["--advertise-openflow-remote", "10.99.0.1:6653", "--site", "a"],
     "--advertise-openflow-remote '10.99.0.1:6653' is not tcp:IP:PORT (an IPv4 address or "
     "[IPv6], port 1-65535)"),
    (["--advertise-openflow-remote", "tcp:wg.example:6653", "--site", "a"],
     "--advertise-openflow-remote 'tcp:wg.example:6653' is not tcp:IP:PORT (an IPv4 address "
     "or [IPv6], port 1-65535)"),
    (["--advertise-openflow", "tcp:10.0.0.1:99999"],
     "--advertise-openflow 'tcp:10.0.0.1:99999' is not tcp:IP:PORT (an IPv4 address or "
     "[IPv6], port 1-65535)"),
    (["--advertise-openflow-remote", "tcp:10.99.0.1:6653"],
     "--advertise-openflow-remote needs --site: the switches of the other sites use it, "
     "those of this replica's site --advertise-openflow"),
    (["--site", "site a"],
     "--site 'site a' is not a site name (1-63 letters, digits, '.', '_' or '-', starting "
     "with a letter or digit)"),
])
@pytest.mark.parametrize("store", ["sqlite", "etcd"])
def test_controller_bad_site_options_are_one_line(
    tmp_path: Path, args: list[str], message: str, store: str
) -> None:
    url = f"sqlite:///{tmp_path}/db" if store == "sqlite" else ETCD
    res = subprocess.run(
        [BIN / "daolinet-controller", "--token-file", str(tmp_path / "t"), "--store", url,
         "--api", "127.0.0.1:8080", "--advertise-openflow", "tcp:10.0.0.1:6653", *args],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines() == [f"daolinet-controller: {message}"]
    # refused before anything is written: no token file, no database
    assert not (tmp_path / "t").exists() and not (tmp_path / "db").exists()
