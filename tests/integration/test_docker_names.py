"""Names across hosts against real dockerd instances (docs/architecture.md, "Names
across hosts").

Lab: conftest.py's docker_lab (h1 and h2 with their own dockerd, given the name
responder as `--dns` as the hostnet role's daemon.json does).  A container on h2
resolves, through the resolver Docker gives it, the name, alias and hostname of a
container on h1 it may reach, and a reverse lookup of its address; a disconnect
makes the name NXDOMAIN; a `docker rename` is followed; a removed container's name
is NXDOMAIN; names answer while the controller is away; the Compose example of the
docs (docs/examples/compose.yaml, run as it is) comes up with one service on each
engine, the services resolve each other by service name and alias across the hosts,
and `down` on both removes everything.  The tests share the lab and run in order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DockerLab as Lab
from testbed.docker import IMAGE, Dockerd
from testbed.procs import run

NET = ["-d", "daolinet", "--ipam-driver", "daolinet"]
RESOLVE_TIMEOUT = 10.0  # seconds (a bound, not a figure: the machine is loaded)
COMPOSE_EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "compose.yaml"


@pytest.fixture(scope="module")
def lab(docker_lab: Lab) -> Lab:
    return docker_lab


def _lookup(lab: Lab, name: str, engine: Dockerd | None = None, asker: str = "c2",
            ) -> tuple[int, str]:
    """`nslookup name` in `asker` (c2, on h2): its exit code and output."""
    res = (engine or lab.d2).cli("exec", asker, "nslookup", name, timeout=30)
    return res.returncode, res.stdout + res.stderr


def _resolves_to(lab: Lab, name: str, ip: str, engine: Dockerd | None = None,
                 asker: str = "c2") -> str:
    """Wait (bounded) until `asker` resolves `name` to `ip`; the nslookup output."""
    found: dict[str, str] = {}

    def check() -> bool:
        code, out = _lookup(lab, name, engine, asker)
        found["out"] = out
        return code == 0 and ip in out.split("Name:", 1)[-1]

    lab.tb.wait_until(check, RESOLVE_TIMEOUT, f"{name} does not resolve to {ip} in {asker}",
                      detail=lambda: found.get("out", ""))
    return found["out"]


def _nxdomain(lab: Lab, name: str, why: str) -> None:
    found: dict[str, str] = {}

    def refused() -> bool:
        code, out = _lookup(lab, name)
        found["out"] = out
        return code != 0 and "NXDOMAIN" in out

    lab.tb.wait_until(refused, RESOLVE_TIMEOUT, f"{name} still resolves in c2 {why}",
                      detail=lambda: found.get("out", ""))


def test_a_container_on_another_host_resolves_by_name_alias_and_hostname(lab: Lab) -> None:
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    d1.ok("network", "create", *NET, "--subnet", "10.93.0.0/24", "names")
    tb.wait_until(lambda: "names" in d2.ok("network", "ls", "--format", "{{.Name}}").split(),
                  10, "names did not appear in h2's Docker engine")
    d1.run("w1", "names", "--network-alias", "api", "--hostname", "box1")
    d2.run("c2", "names")
    ep = tb.wait_until(
        lambda: (r := tb.api("GET", "/containers/w1")).status_code == 200
        and r.json()["aliases"] and r.json(), 10, "w1's aliases not recorded")
    assert (ep["host"], ep["aliases"], ep["hostname"]) == ("h1", ["api"], "box1")
    w1 = ep["ip"]
    _resolves_to(lab, "w1", w1)
    _resolves_to(lab, "api", w1)
    _resolves_to(lab, "box1", w1)
    # ping by name: the name the resolver Docker gave c2 answered
    res = d2.cli("exec", "c2", "ping", "-c1", "-W3", "w1", timeout=30)
    assert res.returncode == 0 and w1 in res.stdout, res.stdout + res.stderr
    # the reverse lookup of w1's address gives its name
    out = _resolves_to(lab, w1, "w1")
    assert "w1" in out


def test_a_name_it_may_not_reach_is_nxdomain(lab: Lab) -> None:
    tb = lab.tb
    r = tb.api("PUT", "/policies/c2/w1", json={"action": "deny"})
    assert r.status_code == 200, r.text
    _nxdomain(lab, "w1", "after a disconnect")
    code, out = _lookup(lab, "api")
    assert code != 0 and "NXDOMAIN" in out, out  # its alias too
    assert tb.api("DELETE", "/policies/c2/w1").status_code == 200
    _resolves_to(lab, "w1", tb.api_json("GET", "/containers/w1")["ip"])  # allowed again


def test_a_rename_is_followed(lab: Lab) -> None:
    tb, d1 = lab.tb, lab.d1
    w1 = tb.api_json("GET", "/containers/w1")["ip"]
    started = time.monotonic()
    d1.ok("rename", "w1", "w1b")
    _resolves_to(lab, "w1b", w1)
    print(f"rename seen in c2 after {time.monotonic() - started:.2f} s")
    _nxdomain(lab, "w1", "after docker rename")
    d1.ok("rename", "w1b", "w1")
    _resolves_to(lab, "w1", w1)


def test_a_stopped_container_no_longer_resolves(lab: Lab) -> None:
    tb, d1 = lab.tb, lab.d1
    d1.ok("rm", "-f", "w1")
    tb.wait_until(lambda: tb.api("GET", "/containers/w1").status_code == 404, 20,
                  "w1's endpoint not removed")
    _nxdomain(lab, "w1", "after docker rm")


def _compose(engine: Dockerd, *args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose (Debian's 1.29, scripts/bootstrap.sh) against `engine`, project
    demo, with the docs' example file as it is."""
    cli = shutil.which("docker-compose")
    assert cli is not None, "docker-compose is missing: run scripts/bootstrap.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env["DOCKER_HOST"] = f"unix://{engine.sock}"
    return run([cli, "-p", "demo", "-f", str(COMPOSE_EXAMPLE), *args], timeout=120, env=env)


def _compose_ok(engine: Dockerd, *args: str) -> str:
    res = _compose(engine, *args)
    assert res.returncode == 0, f"docker-compose {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout + res.stderr


def test_compose_services_on_two_engines_resolve_each_other(lab: Lab) -> None:
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    for engine in (d1, d2):
        engine.ok("tag", IMAGE, "busybox")  # the example's image: the lab's busybox
    try:
        _compose_ok(d1, "up", "-d", "web")
        # h2's engine has the agent's copy first: Compose must take it as its own
        tb.wait_until(lambda: "demo_backend" in d2.ok("network", "ls"), 10,
                      "demo_backend did not appear in h2's engine")
        _compose_ok(d2, "up", "-d", "client")
        net = tb.api_json("GET", "/networks/demo_backend")
        assert net["subnet"] == "10.94.0.0/24", net  # the file's IPAM subnet
        web = tb.wait_until(
            lambda: (r := tb.api("GET", "/containers/demo_web_1")).status_code == 200
            and "api" in r.json()["aliases"] and r.json(), 10, "web's aliases not recorded")
        assert (web["host"], sorted(web["aliases"])) == ("h1", ["api", "web"]), web
        client = tb.wait_until(
            lambda: (r := tb.api("GET", "/containers/demo_client_1")).status_code == 200
            and r.json(), 10, "client not named")
        assert client["host"] == "h2"
        for name in ("web", "api", "demo_web_1"):  # service, alias, container name
            _resolves_to(lab, name, web["ip"], d2, "demo_client_1")
        _resolves_to(lab, "client", client["ip"], d1, "demo_web_1")  # and the other way
        res = d2.cli("exec", "demo_client_1", "ping", "-c1", "-W3", "api", timeout=30)
        assert res.returncode == 0 and web["ip"] in res.stdout, res.stdout + res.stderr
    finally:
        # -t 1: the example's processes ignore SIGTERM as PID 1; no need to wait 10 s
        down2 = _compose(d2, "down", "-t", "1")
        # h2's agent frees the removed client's address within its 6 s sweep; until
        # then the network is in use, and h1's `down` would leave it at the controller
        tb.wait_until(lambda: tb.api("GET", "/containers/demo_client_1").status_code == 404,
                      20, "client's endpoint not freed after down on h2")
        down1 = _compose(d1, "down", "-t", "1")
    assert down2.returncode == 0 and down1.returncode == 0, (down2.stderr, down1.stderr)
    tb.wait_until(lambda: tb.api("GET", "/networks/demo_backend").status_code == 404, 20,
                  "the network stayed at the controller after down on both hosts")
    for engine in (d1, d2):
        tb.wait_until(lambda e=engine: "demo_backend" not in e.ok("network", "ls"), 20,
                      "demo_backend stayed in an engine after down")


def test_names_answer_while_the_controller_is_away(lab: Lab) -> None:
    """The agent's last table keeps answering: no query leaves the host for a name."""
    tb, d1 = lab.tb, lab.d1
    d1.run("w3", "names")
    w3 = tb.wait_until(lambda: (r := tb.api("GET", "/containers/w3")).status_code == 200
                       and r.json()["ip"], 10, "w3 not named")
    _resolves_to(lab, "w3", w3)
    tb.kill_replica(0)
    try:
        code, out = _lookup(lab, "w3")
        assert code == 0 and w3 in out.split("Name:", 1)[-1], out
        code, out = _lookup(lab, "nosuchname")
        assert code != 0 and "NXDOMAIN" in out, out
    finally:
        tb.start_replica(0)
