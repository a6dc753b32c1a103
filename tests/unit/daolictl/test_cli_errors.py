"""The controller's option checks, in-process, through the same run_app as its console
script: each refusal is one line on stderr, exit 1.  The console scripts themselves, in
real processes (--help, a bad flag), are tests/integration/test_console_scripts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import main as controller_main
from controller.cliutil import run_app


def controller(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """What `daolinet-controller ARGV` does up to its exit (controller.main.run), in this
    process: (exit status, stderr)."""
    capsys.readouterr()
    code = run_app(controller_main.cli, "daolinet-controller", argv)
    return code, capsys.readouterr().err


def test_controller_bad_listen_address_is_one_line(tmp_path: Path, capsys) -> None:
    code, err = controller(
        ["--api", "127.0.0.1:99999", "--token-file", str(tmp_path / "t"), "--store",
         f"sqlite:///{tmp_path}/db"],
        capsys,
    )
    assert code == 1
    assert err.strip().splitlines() == ["daolinet-controller: bad port in '127.0.0.1:99999'"]


ETCD = "etcd://127.0.0.1:1"  # never reached: the options are checked before


@pytest.mark.parametrize(("args", "message"), [
    (["--advertise-openflow-remote", "10.99.0.1:6653", "--site", "a"],
     "--advertise-openflow-remote '10.99.0.1:6653' is not ssl:IP:PORT or tcp:IP:PORT (an IPv4 "
     "address or [IPv6], port 1-65535)"),
    (["--advertise-openflow-remote", "tcp:wg.example:6653", "--site", "a"],
     "--advertise-openflow-remote 'tcp:wg.example:6653' is not ssl:IP:PORT or tcp:IP:PORT (an "
     "IPv4 address or [IPv6], port 1-65535)"),
    (["--advertise-openflow", "tcp:10.0.0.1:99999"],
     "--advertise-openflow 'tcp:10.0.0.1:99999' is not ssl:IP:PORT or tcp:IP:PORT (an IPv4 "
     "address or [IPv6], port 1-65535)"),
    (["--advertise-openflow-remote", "tcp:10.99.0.1:6653"],
     "--advertise-openflow-remote needs --site: the switches of the other sites use it, "
     "those of this replica's site --advertise-openflow"),
    (["--site", "site a"],
     "--site 'site a' is not a site name (1-63 letters, digits, '.', '_' or '-', starting "
     "with a letter or digit)"),
])
@pytest.mark.parametrize("store", ["sqlite", "etcd"])
def test_controller_bad_site_options_are_one_line(
    tmp_path: Path, args: list[str], message: str, store: str, capsys
) -> None:
    url = f"sqlite:///{tmp_path}/db" if store == "sqlite" else ETCD
    code, err = controller(
        ["--token-file", str(tmp_path / "t"), "--store", url, "--api", "127.0.0.1:8080",
         "--advertise-openflow", "tcp:10.0.0.1:6653", "--insecure-plaintext", *args],
        capsys,
    )
    assert code == 1, err
    assert err.strip().splitlines() == [f"daolinet-controller: {message}"]
    # refused before anything is written: no token file, no database
    assert not (tmp_path / "t").exists() and not (tmp_path / "db").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-ca", "/x/ca.crt", "--tls-cert", "/x/c.crt"],
     "--tls-ca, --tls-cert and --tls-key go together (given: --tls-ca, --tls-cert)"),
    (["--tls-ca", "/x/ca.crt", "--tls-cert", "/x/c.crt", "--tls-key", "/x/c.key"],
     "--advertise-openflow tcp:10.0.0.1:6653: the OpenFlow listener speaks TLS (--tls-* "
     "given): give ssl:IP:PORT"),
    (["--advertise-openflow", "ssl:10.0.0.1:6653"],
     "--advertise-openflow ssl:10.0.0.1:6653: the OpenFlow listener speaks plain TCP (no "
     "--tls-*): give tcp:IP:PORT"),
    ([],
     "give --tls-ca, --tls-cert and --tls-key (the API, the agent streams and OpenFlow over "
     "TLS; docs/security.md), or --insecure-plaintext to run them in plain text "
     "(development only: anyone on the network may act as any host)"),
    (["--insecure-plaintext", "--advertise-openflow", "ssl:10.0.0.1:6653", "--tls-ca",
      "/x/ca.crt", "--tls-cert", "/x/c.crt", "--tls-key", "/x/c.key"],
     "--insecure-plaintext and --tls-* exclude each other: leave out --insecure-plaintext "
     "to serve over TLS"),
    (["--insecure-plaintext", "--advertise", "https://10.0.0.1:8080"],
     "--advertise https://10.0.0.1:8080: the API is served over plain HTTP (no --tls-*): "
     "give http://HOST:PORT"),
])
def test_controller_tls_options_are_checked_first(
    tmp_path: Path, args: list[str], message: str, capsys
) -> None:
    code, err = controller(
        ["--token-file", str(tmp_path / "t"), "--store", f"sqlite:///{tmp_path}/db",
         "--advertise-openflow", "tcp:10.0.0.1:6653", *args],
        capsys,
    )
    assert code == 1, err
    assert err.strip().splitlines() == [f"daolinet-controller: {message}"]
    assert not (tmp_path / "t").exists() and not (tmp_path / "db").exists()


def test_controller_tls_files_that_do_not_load_are_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    code, err = controller(
        ["--token-file", str(tmp_path / "t"), "--store", f"sqlite:///{tmp_path}/db",
         "--tls-ca", str(tmp_path / "ca.crt"), "--tls-cert", str(tmp_path / "c.crt"),
         "--tls-key", str(tmp_path / "c.key")],
        capsys,
    )
    assert code == 1, err
    assert err.strip().startswith("daolinet-controller: OpenFlow TLS: cannot load")
    assert not (tmp_path / "db").exists()
