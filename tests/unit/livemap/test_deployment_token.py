"""The read-only token the roles deploy (roles/controller): the controller's unit,
rendered as the role renders it, passes `--readonly-token-file`; a token made as the
role makes it is read by the controller's settings as the read-only role, and it
opens the live map (the page's data and its event stream) while every change is
refused (an attacker holding it cannot write; the admin token still can)."""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path

import httpx
import jinja2
import yaml

from controller.api.deps import ApiContext
from controller.api.routes import live, networks
from controller.connlog.log import ConnectionLog
from controller.desired.inventory import Inventory
from controller.livemap.routes import LiveMap
from controller.settings import ControllerSettings, read_tokens
from controller.store.sqlite import SqliteStore
from tests.unit import fakes
from tests.unit.api.support import bearer
from tests.unit.apiserver import serve

ROLE = Path(__file__).parents[3] / "roles" / "controller"


def unit_arguments(tls: bool) -> list[str]:
    """ExecStart of the controller's unit, with the role's defaults (one replica)."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"))
    env.tests["match"] = lambda value, pattern: re.match(pattern, value) is not None
    values = {k: v for k, v in defaults.items() if isinstance(v, (str, int, bool))}
    values |= {"controller_tls": tls, "controller_store": "sqlite:///var/lib/daolinet/db",
               "controller_etcd_members": [], "inventory_hostname": "ctl",
               "daolinet_wheelhouse_hash": "h", "ansible_managed": "test"}
    values |= {"groups": {"daolinet_controller": ["ctl"]}, "daolinet_host_address": "198.18.0.1",
               "daolinet_host_site": "default"}
    for _ in range(3):  # defaults name other defaults
        values = {k: env.from_string(v).render(values) if isinstance(v, str) else v
                  for k, v in values.items()}
    text = env.get_template("daolinet-controller.service.j2").render(values)
    command = text.split("ExecStart=", 1)[1].split("\nRestart=", 1)[0]
    return shlex.split(command.replace("\\\n", " "))[1:]


def test_the_unit_passes_the_read_only_token_with_and_without_tls() -> None:
    for tls in (True, False):
        args = unit_arguments(tls)
        assert args[args.index("--readonly-token-file") + 1] == "/etc/daolinet/readonly.token"
        assert args[args.index("--token-file") + 1] == "/etc/daolinet/controller.token"


def test_the_deployed_read_only_token_opens_the_map_and_changes_nothing(
        tmp_path: Path) -> None:
    args = unit_arguments(tls=False)
    files: dict[str, Path] = {}
    for flag in ("--token-file", "--readonly-token-file", "--agent-token-file"):
        # made as the role makes them (secrets.token_urlsafe(32), mode 0600), here
        path = tmp_path / Path(args[args.index(flag) + 1]).name
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
        files[flag.removeprefix("--").replace("-", "_")] = path
    assert "--insecure-plaintext" in args  # controller_tls false: the plain-text unit
    admin, readonly, agent = read_tokens(
        ControllerSettings(insecure_plaintext=True, **files))  # type: ignore[arg-type]
    assert readonly and len({admin, readonly, agent}) == 3
    inv = Inventory(SqliteStore(tmp_path / "db"), lambda change: None)
    ctx = ApiContext(inventory=inv, token=admin, readonly_token=readonly, agent_token=agent,
                     runtime=fakes.FakeRuntime(1), openflow_host="0.0.0.0",
                     openflow_port=6653, connlog=ConnectionLog(), replica={"name": "ctl"})
    livemap = LiveMap()
    try:
        with serve(ctx, [live.router, networks.router, livemap.api_router],
                   pages=[livemap.page_router]) as url, httpx.Client(
                base_url=url, timeout=10) as client:
            assert client.get("/map").status_code == 200
            view = client.get("/api/v1/map/view", headers=bearer(readonly))
            assert view.status_code == 200 and view.json()["totals"]["hosts"] == 0
            with client.stream("GET", "/api/v1/map/events",
                               headers=bearer(readonly)) as events:
                assert events.status_code == 200
                assert next(events.iter_lines()) == "event: view"
            # the attack: the read-only token tries to change the network
            body = {"name": "web", "subnet": "10.1.0.0/24"}
            refused = client.post("/api/v1/networks", json=body, headers=bearer(readonly))
            assert refused.status_code == 403
            assert refused.json()["detail"].startswith("the read-only token may not change")
            assert inv.index.view().network("web") is None
            # the legitimate change: the admin token
            made = client.post("/api/v1/networks", json=body, headers=bearer(admin))
            assert made.status_code == 201 and inv.index.view().network("web") is not None
    finally:
        inv.store.close()
