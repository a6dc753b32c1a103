"""Atomic changes under SIGKILL: a real `daolinet-controller` is killed 20 times while
changes of several documents stream through its API (deleting a network writes the
network, its rules and the groups that list it; a rule added first shifts the others),
on SQLite and on a 1-member etcd (tests/etcdcluster.py).  After each kill the store,
read directly before any controller repairs it, holds no dangling reference (a group
listing a missing network, a rule on a missing target, a gap in rule positions); the
controller restarted on it serves the same through its API (docs/architecture.md,
"Atomic changes").  The unit suites (tests/unit/desired/test_atomic.py, on etcd:
test_atomic.py) fail every change at every one of its writes."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.store.base import Documents
from controller.store.url import open_store
from tests.etcdcluster import EtcdCluster, unique_prefix
from tests.integration.testbed.procs import BIN_DIR, free_ports

KILLS = 20
NETWORKS = 4  # names the workload creates and deletes in turn


class Controller:
    """One daolinet-controller process on loopback, started and SIGKILLed at will."""

    def __init__(self, store_url: str, workdir: Path, replicated: bool) -> None:
        self.store_url = store_url
        self.token = secrets.token_urlsafe(24)
        self.token_file = workdir / "token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        self.log = workdir / "controller.log"
        self.api_port, self.of_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.cmd = [
            str(BIN_DIR / "daolinet-controller"), "--store", store_url,
            "--token-file", str(self.token_file),
            "--api", f"127.0.0.1:{self.api_port}", "--openflow", f"127.0.0.1:{self.of_port}",
            "--insecure-plaintext",  # what is killed here is the store, not the channels
        ]
        if replicated:
            self.cmd += ["--replica", "c0", "--advertise", self.url,
                         "--advertise-openflow", f"tcp:127.0.0.1:{self.of_port}"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"controller did not serve {self.url}/healthz:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def workload(client: httpx.Client, stop: threading.Event, done: list[str]) -> None:
    """Changes of several documents, in a loop, until the controller dies."""
    k = 0
    while not stop.is_set():
        net = f"net{k % NETWORKS}"
        subnet = f"10.{10 + k % NETWORKS}.0.0/24"
        steps: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", "/networks", {"name": net, "subnet": subnet}),
            ("POST", "/groups/g1/members", {"network": net}),
            ("POST", "/groups/g2/members", {"network": net}),
            ("POST", "/firewalls/rules", {"target_kind": "network", "target": net,
                                          "action": "allow", "protocol": "tcp",
                                          "ports": ["80"]}),
            ("POST", "/firewalls/rules", {"target_kind": "network", "target": net,
                                          "action": "deny", "position": 0}),
            ("POST", "/firewalls/rules", {"target_kind": "group", "target": "g1",
                                          "action": "allow", "position": 0}),
            ("DELETE", f"/networks/{net}", None),  # the network, 2 rules, 2 groups
        ]
        if k % 3 == 2:
            steps.append(("DELETE", f"/networks/net{(k + 1) % NETWORKS}", None))
        for method, path, body in steps:
            try:
                client.request(method, f"/api/v1{path}", json=body)
            except httpx.HTTPError:
                return  # killed
            done.append(f"{method} {path}")
        k += 1


def dangling(docs: Documents) -> list[str]:
    """The dangling references of a store's documents."""
    networks = {d["name"] for d in docs.get("network", [])}
    groups = {d["name"] for d in docs.get("group", [])}
    found = [f"group {g['name']} lists missing network {n}"
             for g in docs.get("group", []) for n in g["networks"] if n not in networks]
    by_target: dict[tuple[str, str], list[int]] = {}
    for rule in docs.get("rule", []):
        kind, target = rule["target_kind"], rule["target"]
        if target not in (networks if kind == "network" else groups):
            found.append(f"rule {rule['id']} on missing {kind} {target}")
        by_target.setdefault((kind, target), []).append(rule["position"])
    for (kind, target), positions in by_target.items():
        if sorted(positions) != list(range(len(positions))):
            found.append(f"rules of {kind} {target} at positions {sorted(positions)}")
    return found


def api_dangling(c: Controller) -> list[str]:
    """The same, as the restarted controller's API shows it."""
    with httpx.Client(base_url=f"{c.url}/api/v1", headers=c.headers, timeout=10) as api:
        networks = {n["name"] for n in api.get("/networks").raise_for_status().json()}
        groups = api.get("/groups").raise_for_status().json()
        rules = api.get("/firewalls/rules").raise_for_status().json()
    docs: Documents = {
        "network": [{"name": n} for n in networks],
        "group": [{"name": g["name"], "networks": g["networks"]} for g in groups],
        "rule": rules,
    }
    return dangling(docs)


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, bool]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}", False
        return
    cluster = EtcdCluster(1, tls=False)  # the controller here runs without --tls-*
    try:
        yield cluster.url(unique_prefix("atomic")), True
    finally:
        cluster.close()


def test_sigkills_during_multi_document_changes_leave_no_dangling_reference(
    store_url: tuple[str, bool], tmp_path: Path
) -> None:
    url, replicated = store_url
    c = Controller(url, tmp_path, replicated)
    rng = random.Random(17)
    changes_done = 0
    try:
        c.start()
        with httpx.Client(base_url=f"{c.url}/api/v1", headers=c.headers, timeout=10) as api:
            for group in ("g1", "g2"):
                api.post("/groups", json={"name": group}).raise_for_status()
        for kill in range(KILLS):
            stop, done = threading.Event(), []
            client = httpx.Client(base_url=c.url, headers=c.headers, timeout=5)
            worker = threading.Thread(target=workload, args=(client, stop, done))
            worker.start()
            time.sleep(rng.uniform(0.1, 0.6))
            c.kill()
            stop.set()
            worker.join(10)
            client.close()
            changes_done += len(done)
            store = open_store(url)
            try:
                found = dangling(store.snapshot()[1])
            finally:
                store.close()
            assert found == [], f"kill {kill + 1}: the store holds {found}"
            c.start()
            assert api_dangling(c) == [], f"kill {kill + 1}: the API shows dangling references"
        assert changes_done > KILLS * 5, f"only {changes_done} changes ran: the kills hit nothing"
        log = c.log.read_text(errors="replace")
        assert "set aside" not in log and "repaired" not in log, c.tail()
    finally:
        c.kill()
