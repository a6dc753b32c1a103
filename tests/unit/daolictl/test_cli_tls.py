"""daolictl against the API over HTTPS (a real uvicorn server with the controller's
TLS configuration on 127.0.0.1): `--ca` / DAOLINET_CA verifies the controller, and
`host revoke` / `host revocations` (docs/security.md, "Revocation")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.api.deps import ApiContext
from controller.daolictl.commands import app as cli_app
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore
from controller.trust.identity import CertRole, Identity
from controller.trust.revocation import Revocations
from controller.trust.tls import ServerContext, TlsFiles
from tests.pki import TestCA
from tests.unit import fakes
from tests.unit.apiserver import serve
from tests.unit.clirunner import CliRunner

TOKEN = "cli-tls-token"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, ApiContext, TestCA]]:
    store = SqliteStore(tmp_path / "db")
    ca = TestCA(tmp_path / "pki")
    ctx = ApiContext(inventory=Inventory(store, lambda _c: None), token=TOKEN,
                     runtime=fakes.FakeRuntime(1), openflow_host="0.0.0.0",
                     openflow_port=6653, tls=True, revocations=Revocations(store))
    ctx.inventory.register_host("h1", "198.18.0.11")
    own = ca.issue("c1", "controller", ips=["127.0.0.1"])
    with serve(ctx, tls=ServerContext(TlsFiles(ca.cert_file, own.cert_file,
                                               own.key_file))) as url:
        yield url, ctx, ca
    store.close()


@pytest.fixture
def run(api: tuple[str, ApiContext, TestCA]):
    url, _, ca = api
    runner = CliRunner()

    def invoke(*args: str, ca_file: str | None = str(ca.cert_file)) -> Any:
        env = {"DAOLINET_URL": url, "DAOLINET_TOKEN": TOKEN}
        if ca_file is not None:
            env["DAOLINET_CA"] = ca_file
        return runner.invoke(cli_app, list(args), env=env)

    return invoke


def test_the_ca_verifies_the_controller(run, api: tuple[str, ApiContext, TestCA],
                                        tmp_path: Path) -> None:
    result = run("host", "list", "--json")
    assert result.exit_code == 0, result.output
    assert [h["name"] for h in json.loads(result.stdout)] == ["h1"]
    # the system's CAs do not know the deployment's: refused, one line
    result = run("host", "list", ca_file=None)
    assert result.exit_code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.output
    # another CA: refused too
    other = TestCA(tmp_path / "other")
    result = run("host", "list", ca_file=str(other.cert_file))
    assert result.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in result.output
    result = run("host", "list", ca_file=str(tmp_path / "missing.crt"))
    assert result.exit_code == 1 and "cannot load the CA certificate --ca" in result.output


def test_host_revoke_and_revocations(run, api: tuple[str, ApiContext, TestCA]) -> None:
    _, ctx, ca = api
    result = run("host", "revoke", "h1", "--reason", "stolen laptop")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "revoked host h1"
    h1 = ca.issue("h1", "host")
    assert ctx.revocations is not None
    refused = ctx.revocations.refused(Identity(CertRole.HOST, "h1", h1.serial))
    assert refused is not None and refused.reason == "stolen laptop"
    result = run("host", "revoke", "--serial", "0A:1b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["serial"] == "a1b"
    result = run("host", "revocations", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(r["host"], r["serial"]) for r in listed] == [("h1", None), (None, "a1b")]


@pytest.mark.parametrize(("args", "message"), [
    ((), "give either HOST or --serial"),
    (("h1", "--serial", "0a"), "give either HOST or --serial"),
    (("--serial", "xyz"), "serial 'xyz' is not a certificate serial"),
    (("bad name",), "host"),
])
def test_host_revoke_refusals_are_one_line(run, args: tuple[str, ...], message: str) -> None:
    result = run("host", "revoke", *args)
    assert result.exit_code == 1
    assert message in result.output
