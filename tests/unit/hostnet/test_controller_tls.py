"""The agent's client of the controller over HTTPS (hostnet/agent/client.py) against
the real HTTPS server: it verifies the controller against the deployment's CA and
presents its host's certificate, which acts for its own host only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.trust.tls import ClientContext, ServerContext, TlsFiles
from hostnet.agent.client import ControllerClient, ControllerError, ControllerUnreachable
from hostnet.agent.config import AgentConfig
from tests.pki import TestCA
from tests.unit.api.support import make_ctx
from tests.unit.apiserver import serve


def test_the_agent_registers_its_own_host_with_its_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    ctx = make_ctx(tmp_path / "db", [])
    ctx.tls = True
    own = ca.issue("c1", "controller", ips=["127.0.0.1"])
    h1 = ca.issue("h1", "host")
    other = TestCA(tmp_path / "other")

    async def calls(url: str) -> None:
        tls = ClientContext(ca.cert_file, TlsFiles(ca.cert_file, h1.cert_file, h1.key_file))
        client = ControllerClient(url, None, tls=tls)  # the certificate alone
        try:
            reg = await client.register("h1", "198.18.0.1", "default")
            assert reg.name == "h1"
            with pytest.raises(ControllerError) as refused:
                await client.register("h2", "198.18.0.2", "default")
            assert refused.value.status == 403
            assert "may not register the record of host h2" in refused.value.detail
        finally:
            await client.aclose()
        # a controller whose certificate is not of the deployment's CA: not trusted
        doubtful = ControllerClient(url, "no-token", tls=ClientContext(other.cert_file))
        try:
            with pytest.raises(ControllerUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                await doubtful.list_networks()
        finally:
            await doubtful.aclose()

    with serve(ctx, tls=ServerContext(TlsFiles(ca.cert_file, own.cert_file,
                                               own.key_file))) as url:
        asyncio.run(calls(url))
    ctx.inventory.store.close()


def test_with_tls_the_controller_url_must_be_https(tmp_path: Path) -> None:
    files = {"tls_ca": tmp_path / "ca.crt", "tls_cert": tmp_path / "h.crt",
             "tls_key": tmp_path / "h.key", "ovsdb": "unix:/run/openvswitch/db.sock"}
    with pytest.raises(ValueError, match=r"--controller http://10.0.0.1:8080: with --tls-\* "
                                         "the controller's API is HTTPS"):
        AgentConfig(controller="https://10.0.0.2:8080,http://10.0.0.1:8080",
                    token_file=tmp_path / "t", host="h1", **files)
    assert AgentConfig(controller="https://10.0.0.1:8080", token_file=tmp_path / "t",
                       host="h1", **files).tls


def test_the_token_file_is_needed_only_without_tls(tmp_path: Path) -> None:
    base = {"host": "h1", "ovsdb": "unix:/run/openvswitch/db.sock"}
    with pytest.raises(ValueError, match=r"--token-file: needed without --tls-\*"):
        AgentConfig(controller="http://10.0.0.1:8080", **base)
    assert AgentConfig(controller="http://10.0.0.1:8080", token_file=tmp_path / "t",
                       **base).token_file == tmp_path / "t"
    assert AgentConfig(controller="https://10.0.0.1:8080", tls_ca=tmp_path / "ca.crt",
                       tls_cert=tmp_path / "h.crt", tls_key=tmp_path / "h.key",
                       **base).token_file is None
