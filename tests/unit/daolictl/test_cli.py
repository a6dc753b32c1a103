"""daolictl against a real uvicorn server on 127.0.0.1 (free port, fixture thread)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.api.deps import ApiContext
from controller.cluster.leases import REPLICAS, replica_record
from controller.daolictl.commands import app as cli_app
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from tests.unit.apiserver import serve
from tests.unit.clirunner import CliRunner
from tests.unit.daolictl.support import ROUTES, Api, FakeRuntime, served_api

TOKEN = "cli-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_dir: Callable[[str], Path]) -> Iterator[Api]:
    with served_api(tmp_dir("cli") / "cli.db", TOKEN) as served:
        yield served


@pytest.fixture
def run(api: Api):
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        environ = {"DAOLINET_URL": api.url, "DAOLINET_TOKEN": TOKEN}
        if env is not None:
            environ = env
        return runner.invoke(cli_app, list(args), env=environ)

    return invoke


@pytest.fixture(autouse=True)
def clean(api: Api) -> Iterator[None]:
    inv = api.ctx.inventory
    yield
    for ep in inv.endpoints():
        inv.remove_endpoint(ep.id)
    for net in inv.networks():
        inv.delete_network(net.name)


@pytest.fixture
def hosts(api: Api) -> None:
    api.ctx.inventory.register_host("h1", "198.18.0.11")
    api.ctx.inventory.register_host("h2", "198.18.0.12", site="east")


def test_network_lifecycle(run) -> None:
    r = run("network", "create", "web", "10.1.0.0/24", "--mtu", "1400")
    assert r.exit_code == 0, r.output
    assert "10.1.0.0/24" in r.stdout
    assert "1400" in r.stdout
    r = run("network", "create", "db", "10.2.0.0/16", "--gateway", "10.2.255.254", "--json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert created["gateway"] == "10.2.255.254"

    r = run("network", "list")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SUBNET", "GATEWAY", "MTU", "EXTERNAL", "INTERNAL", "ID"]
    assert lines[1].split()[:5] == ["db", "10.2.0.0/16", "10.2.255.254", "1500", "no"]
    assert lines[2].split()[:4] == ["web", "10.1.0.0/24", "10.1.0.1", "1400"]

    r = run("network", "list", "--json")
    assert [n["name"] for n in json.loads(r.stdout)] == ["db", "web"]

    r = run("network", "show", "db", "--json")
    assert json.loads(r.stdout) == created
    r = run("network", "show", "web")
    assert r.exit_code == 0
    assert any(line.split() == ["gateway", "10.1.0.1"] for line in r.stdout.splitlines())

    r = run("network", "delete", "web")
    assert r.exit_code == 0
    assert r.stdout.strip() == "deleted network web"
    r = run("network", "show", "web")
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: network web not found (HTTP 404)"
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["network", "create", "x", "10.1.0.1/24"],
            "error: subnet 10.1.0.1/24 has host bits set (did you mean 10.1.0.0/24?) (HTTP 422)",
        ),
        (["network", "create", "x", "10.1.0.0/31"], "error: subnet 10.1.0.0/31 leaves no room"),
        (
            ["network", "create", "x", "0.0.0.0/0"],
            "error: subnet 0.0.0.0/0 is too large: use /8 or smaller (HTTP 422)",
        ),
        (
            ["network", "create", "x", "127.0.0.0/8"],
            "error: subnet 127.0.0.0/8 overlaps the loopback range 127.0.0.0/8 (HTTP 422)",
        ),
        (
            ["network", "create", "x", "10.9.0.0/24", "--mtu", "100"],
            "error: mtu: Input should be greater than or equal to 576 (HTTP 422)",
        ),
        (["network", "delete", "nope"], "error: network nope not found (HTTP 404)"),
        (["container", "show", "ghost"], "error: container ghost not found (HTTP 404)"),
    ],
)
def test_api_errors_one_line(run, args, message) -> None:
    r = run(*args)
    assert r.exit_code == 1
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(message)
    assert "Traceback" not in r.output


def test_overlap_and_in_use(run, api: Api, hosts: None) -> None:
    assert run("network", "create", "web", "10.1.0.0/24").exit_code == 0
    r = run("network", "create", "x", "10.1.0.0/16")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "error: subnet 10.1.0.0/16 overlaps network web (10.1.0.0/24) (HTTP 409)"
    )
    api.ctx.inventory.add_endpoint("c1", "web", "h1")
    r = run("network", "delete", "web")
    assert r.exit_code == 1
    assert "network web still has 1 container(s): c1" in r.stderr


def test_containers(run, api: Api, hosts: None) -> None:
    inv = api.ctx.inventory
    inv.create_network("web", "10.1.0.0/24")
    c1 = inv.add_endpoint("c1", "web", "h1")
    inv.add_endpoint("c2", "web", "h2")
    r = run("container", "list")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "NETWORK", "HOST", "IP", "MAC", "PORT", "ID"]
    assert lines[1].split()[:5] == ["c1", "web", "h1", "10.1.0.2", "02:da:0a:01:00:02"]
    assert len(lines) == 3
    r = run("container", "list", "--host", "h2", "--json")
    assert [e["name"] for e in json.loads(r.stdout)] == ["c2"]
    r = run("container", "show", c1.id, "--json")
    shown = json.loads(r.stdout)
    assert (shown["name"], shown["prefixlen"], shown["gateway"], shown["mtu"]) == (
        "c1",
        24,
        "10.1.0.1",
        1500,
    )
    r = run("container", "show", "c1")
    assert any(line.split() == ["port", c1.port] for line in r.stdout.splitlines())


def test_empty_lists(run) -> None:
    r = run("container", "list")
    assert (r.exit_code, r.stdout.strip()) == (0, "no containers")
    r = run("network", "list", "--json")
    assert json.loads(r.stdout) == []


def test_hosts(run, hosts: None) -> None:
    r = run("host", "list")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "SITE", "DPID", "REGISTERED"]
    assert lines[1].split()[:4] == ["h1", "198.18.0.11", "default", "0000000000000001"]
    assert lines[2].split()[:4] == ["h2", "198.18.0.12", "east", "0000000000000002"]
    r = run("host", "list", "--json")
    hosts_json = json.loads(r.stdout)
    # wildcard OpenFlow listen address: the address daolictl used to reach the API
    assert hosts_json[0]["openflow_targets"] == ["tcp:127.0.0.1:6653"]


def test_routes(run) -> None:
    r = run("route", "list")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SRC", "DST", "SRC", "HOST", "DST", "HOST", "PATH", "AGE", "IDLE"]
    assert lines[1].split() == [
        "10.1.0.2",
        "10.1.0.3",
        "h1",
        "h2",
        "h1",
        "->",
        "h2",
        "2m05s",
        "2.2s",
    ]
    r = run("route", "list", "--host", "h1", "--json")
    assert json.loads(r.stdout) == ROUTES
    r = run("route", "list", "--host", "h9")
    assert r.stdout.strip() == "no live connections"


def test_replicas_of_a_standalone_controller(run, api: Api) -> None:
    api.ctx.replica = replica_record("c0", "http://198.18.0.1:8080", "tcp:198.18.0.1:6653",
                                     site="a", openflow_remote="tcp:100.64.0.1:6653")
    try:
        r = run("replica", "list")
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["NAME", "SITE", "LEADER", "MEMBER", "SWITCHES", "API",
                                    "OPENFLOW", "OPENFLOW", "REMOTE"]
        assert lines[1].split() == ["c0", "a", "yes", "yes", "h1,h2", "http://198.18.0.1:8080",
                                    "tcp:198.18.0.1:6653", "tcp:100.64.0.1:6653"]
        assert lines[2] == "leader c0, generation -"  # (no elector in this test app)
        r = run("replica", "list", "--json")
        assert json.loads(r.stdout) == {
            "leader": "c0", "generation": None, "assignment_generation": None,
            "replicas": [{"name": "c0", "api": "http://198.18.0.1:8080",
                          "openflow": "tcp:198.18.0.1:6653",
                          "openflow_remote": "tcp:100.64.0.1:6653", "site": "a",
                          "leader": True, "member": True, "switches": ["h1", "h2"]}],
        }
    finally:
        api.ctx.replica = None
    r = run("replica", "list")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["no replicas",
                                     "no replica leads now (an election is under way)"]


def replicated_context(store: SqliteStore) -> ApiContext:
    """An API on `store` as replicated controllers see it (SQLite standing in for etcd)."""
    return ApiContext(inventory=Inventory(store, lambda _c: None, replicated=True), token=TOKEN,
                      runtime=FakeRuntime(), openflow_host="0.0.0.0", openflow_port=6653)


def test_replicas_of_replicated_controllers(tmp_path: Path) -> None:
    """Records and the leader key from the store (SQLite standing in for etcd)."""
    store = SqliteStore(tmp_path / "r.db")
    records = [replica_record("c0", "http://198.18.0.1:8080", "tcp:198.18.0.1:6653"),
               replica_record("c1", "http://198.18.0.2:8080", "tcp:198.18.0.2:6653",
                              site="b", openflow_remote="tcp:100.64.0.2:6653")]
    for record in records:
        store.put(REPLICAS, str(record["name"]), record)
    runner = CliRunner()
    try:
        with serve(replicated_context(store)) as url:
            env = {"DAOLINET_URL": url, "DAOLINET_TOKEN": TOKEN}
            r = runner.invoke(cli_app, ["replica", "list"], env=env)
            assert r.exit_code == 0, r.output
            assert [line.split()[:3] for line in r.stdout.splitlines()[1:3]] == [
                ["c0", "-", "no"], ["c1", "b", "no"]]
            assert r.stdout.splitlines()[3] == "no replica leads now (an election is under way)"
            lease = store.try_lead(records[1], ttl=60)
            assert lease is not None
            r = runner.invoke(cli_app, ["replica", "list"], env=env)
            lines = r.stdout.splitlines()
            assert [line.split()[:3] for line in lines[1:3]] == [
                ["c0", "-", "no"], ["c1", "b", "yes"]]
            assert lines[3] == f"leader c1, generation {lease.generation}"
            r = runner.invoke(cli_app, ["replica", "list", "--json"], env=env)
            answer = json.loads(r.stdout)
            assert (answer["leader"], answer["generation"]) == ("c1", lease.generation)
            assert [x["leader"] for x in answer["replicas"]] == [False, True]
    finally:
        store.close()


def test_replica_remove(tmp_path: Path) -> None:
    """A stopped replica (its API refuses: loopback port 9) is forgotten; errors are
    one line with the API's reason."""
    store = SqliteStore(tmp_path / "r.db")
    store.put(REPLICAS, "old", replica_record("old", "http://127.0.0.1:9", "tcp:127.0.0.1:6653"))
    runner = CliRunner()
    try:
        with serve(replicated_context(store)) as url:
            env = {"DAOLINET_URL": url, "DAOLINET_TOKEN": TOKEN}
            r = runner.invoke(cli_app, ["replica", "remove", "old"], env=env)
            assert (r.exit_code, r.stdout) == (0, "removed replica old\n"), r.output
            assert store.get(REPLICAS, "old") is None
            r = runner.invoke(cli_app, ["replica", "remove", "old"], env=env)
            assert r.exit_code == 1
            assert r.stderr.strip() == "error: no replica old (HTTP 404)"
    finally:
        store.close()


def test_token_errors(run, api: Api) -> None:
    r = run("network", "list", env={"DAOLINET_URL": api.url})
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "error: missing bearer token (set DAOLINET_TOKEN or pass --token) (HTTP 401)"
    )
    r = run("network", "list", env={"DAOLINET_URL": api.url, "DAOLINET_TOKEN": "wrong"})
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: invalid token (HTTP 401)"


def test_root_options_override_env(run, api: Api) -> None:
    env = {"DAOLINET_URL": "http://127.0.0.1:1", "DAOLINET_TOKEN": "wrong"}
    r = run("--url", api.url, "--token", TOKEN, "network", "list", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == []


def test_unreachable_api(run) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = run("network", "list", env={"DAOLINET_URL": url, "DAOLINET_TOKEN": TOKEN})
    assert r.exit_code == 1
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"error: cannot reach the daolinet API at {url}: ")


def test_bad_url(run) -> None:
    r = run("network", "list", env={"DAOLINET_URL": "ftp://x", "DAOLINET_TOKEN": TOKEN})
    assert r.exit_code == 1
    assert r.stderr.startswith("error: invalid API URL 'ftp://x'")


def test_help_lists_commands(run) -> None:
    r = run("--help")
    assert r.exit_code == 0
    for group in ("network", "container", "host", "route", "replica"):
        assert group in r.stdout


def test_host_remove_is_refused_with_containers_unless_forced(run, api: Api) -> None:
    inv = api.ctx.inventory
    inv.register_host("h7", "198.18.0.17")
    inv.register_host("h8", "198.18.0.18")
    inv.create_network("web", "10.1.0.0/24")
    inv.add_endpoint("c7", "web", "h7")
    r = run("host", "remove", "h7")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "error: host h7 still has 1 container(s): c7; remove them first, or force the "
        "removal (their endpoints go too) (HTTP 409)")
    r = run("host", "remove", "h7", "--force")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "removed host h7 and its 1 container(s): c7"
    r = run("host", "remove", "h8", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["removed_containers"] == []
    assert [h.name for h in inv.hosts() if h.name in ("h7", "h8")] == []
    assert run("host", "remove", "h8").stderr.strip() == "error: host h8 not found (HTTP 404)"
