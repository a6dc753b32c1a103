"""The controller role's restart script (roles/controller/templates/restart-controller.j2),
rendered as the role renders it and run against a real API serving /readyz: it moves
on only once the replica is ready with at least the switches it had, and fails
after its timeout otherwise.  systemctl is a stand-in that records its calls."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import pytest

from controller.api import readiness
from controller.api.deps import ApiContext
from controller.cluster.roles import Roles
from controller.datapath.runtime import DatapathRuntime
from controller.desired.inventory import Inventory
from controller.desired.models import Host
from controller.store.sqlite import SqliteStore
from tests.unit.api.test_readiness import Hub
from tests.unit.apiserver import serve

TEMPLATE = Path(__file__).parents[2] / "roles" / "controller" / "templates"


class Replica:
    """The state /readyz reads, changed by the test as a restarting replica's would."""

    def __init__(self, tmp_path: Path) -> None:
        inventory = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
        for name, dpid in (("h1", 1), ("h2", 2)):
            inventory.index.put_host(Host(name=name, dpid=dpid,
                                          address=ipaddress.IPv4Address(f"198.18.0.{dpid}")))
        self.roles = Roles()
        self.hub = Hub()
        self.ctx = ApiContext(inventory=inventory, token="t",
                              runtime=DatapathRuntime(inventory.index, self.roles),
                              openflow_host="0.0.0.0", openflow_port=6653, roles=self.roles,
                              hub=self.hub, ready_wait=30.0)  # type: ignore[arg-type]

    def serving(self) -> None:
        self.roles.set_master(1)
        for dpid in (1, 2):
            self.roles.switch_seen(dpid, True)
            self.roles.confirm_master(dpid, True)
        self.hub.streaming = ["h1", "h2"]

    def restarted(self) -> None:
        """A fresh process: no switch, no agent, its wait starting now."""
        self.roles.set_master(None)
        for dpid in (1, 2):
            self.roles.switch_seen(dpid, False)
        self.hub.streaming = []
        self.ctx.started = time.monotonic()
        self.roles.set_master(2)


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[Replica, str]]:
    r = Replica(tmp_path)
    r.serving()
    with serve(r.ctx, pages=[readiness.router]) as url:  # at /readyz, as main.py
        yield r, url


def script(tmp_path: Path, url: str, timeout: int) -> tuple[Path, dict[str, str]]:
    """The rendered script and an environment whose `systemctl` records its calls
    (on a restart: touches `restarted`, then waits for `fresh`)."""
    port = urlsplit(url).port
    text = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE)).get_template(
        "restart-controller.j2").render(
        controller_venv=str(Path(sys.executable).parents[1]), ansible_managed="test",
        controller_api_scheme="http", controller_api_port=port, controller_tls=False,
        controller_service="daolinet-controller", controller_restart_timeout=timeout)
    path = tmp_path / "restart-controller"
    path.write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    # a restart returns once the old process is gone: the test has made the state a
    # fresh replica's (`after_restart`)
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n'
                    f'[ "$1" = restart ] || exit 0\ntouch {tmp_path}/restarted\n'
                    f'while [ ! -e {tmp_path}/fresh ]; do sleep 0.02; done\n')
    fake.chmod(0o755)
    return path, {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def after_restart(tmp_path: Path, steps: list[Callable[[], None]]) -> threading.Thread:
    """Once the script restarts the service: the first step (the fresh process), then
    the restart returns, then the other steps half a second apart."""
    def go() -> None:
        deadline = time.monotonic() + 20
        while not (tmp_path / "restarted").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        steps[0]()
        (tmp_path / "fresh").touch()
        for step in steps[1:]:
            time.sleep(0.5)
            step()
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_the_handler_waits_until_the_switches_are_back_and_mastered(
    replica: tuple[Replica, str], tmp_path: Path) -> None:
    r, url = replica
    path, env = script(tmp_path, url, timeout=30)
    ready_at: list[float] = []

    def back_unconfirmed() -> None:
        r.roles.switch_seen(1, True)
        r.roles.switch_seen(2, True)  # connected, not yet confirmed as master

    def confirmed() -> None:
        r.roles.confirm_master(1, True)
        r.roles.confirm_master(2, True)

    def streaming() -> None:
        ready_at.append(time.monotonic())
        r.hub.streaming = ["h1", "h2"]

    steps = after_restart(tmp_path, [r.restarted, back_unconfirmed, confirmed, streaming])
    result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                            text=True, timeout=60)
    finished = time.monotonic()
    steps.join(timeout=10)
    assert result.returncode == 0, result.stderr
    assert ready_at and ready_at[0] < finished  # it had not moved on before the last step
    assert "is ready again with 2 switch(es) connected (2 before)" in result.stdout
    assert (tmp_path / "systemctl.log").read_text().split("\n")[:2] == [
        "daemon-reload", "restart daolinet-controller"]


def test_the_handler_fails_when_fewer_switches_come_back(
    replica: tuple[Replica, str], tmp_path: Path) -> None:
    """Past --ready-wait a replica is ready without an absent switch; the handler
    still wants the switches it had before, so the run stops at this replica."""
    r, url = replica
    path, env = script(tmp_path, url, timeout=3)

    def one_back_and_the_wait_over() -> None:
        r.roles.switch_seen(1, True)
        r.roles.confirm_master(1, True)
        r.hub.streaming = ["h1"]
        r.ctx.started -= 60  # the wait is over: ready, with one switch of two

    steps = after_restart(tmp_path, [r.restarted, one_back_and_the_wait_over])
    result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                            text=True, timeout=60)
    steps.join(timeout=10)
    assert result.returncode == 1
    assert ("was not ready again with 2 switch(es) connected within 3 s "
            "(now: ready, connected = (True, 1))") in result.stderr
