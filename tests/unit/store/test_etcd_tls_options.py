"""The controller's etcd TLS options (controller/settings.py, controller/main.py):
etcd trusts a CA of its own (docs/security.md, "etcd"), so with an etcd store and
TLS the replica needs its etcd client files, never falls back to the --tls-* files,
and refuses an etcd CA that is the deployment's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.main import etcd_tls_of
from controller.settings import ControllerSettings, load_settings
from controller.store.etcd.client import EtcdTLS
from tests.pki import TestCA

ETCD = "etcd://127.0.0.1:2379/daolinet"
REPLICA = {"replica": "c1", "advertise": "http://10.0.0.1:8080",
           "advertise_openflow": "ssl:10.0.0.1:6653"}


def _settings(tmp_path: Path, **values: Any) -> ControllerSettings:
    """Settings of `values`; without the --tls-* files, --insecure-plaintext (and an
    http:// API), which the controller then requires."""
    tls = "tls_ca" in values
    if "advertise" in values and tls:
        values["advertise"] = values["advertise"].replace("http://", "https://")
    if "advertise_openflow" in values and not tls:
        values["advertise_openflow"] = values["advertise_openflow"].replace("ssl:", "tcp:")
    return load_settings({"token_file": tmp_path / "t", "insecure_plaintext": not tls,
                          **values})


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """The deployment CA's replica files and the etcd CA's client files."""
    deployment, etcd = TestCA(tmp_path / "pki"), TestCA(tmp_path / "etcd-pki")
    replica = deployment.issue("c1", "controller")
    client = etcd.issue("c1", "controller")
    return {"tls_ca": deployment.cert_file, "tls_cert": replica.cert_file,
            "tls_key": replica.key_file, "etcd_tls_ca": etcd.cert_file,
            "etcd_tls_cert": client.cert_file, "etcd_tls_key": client.key_file}


def _deployment(pki: dict[str, Path]) -> dict[str, Path]:
    return {k: v for k, v in pki.items() if not k.startswith("etcd_")}


def test_an_etcd_store_with_tls_needs_the_etcd_files(tmp_path: Path,
                                                     pki: dict[str, Path]) -> None:
    """No fallback to the --tls-* files: their CA signs every host's certificate."""
    with pytest.raises(ValueError, match="give --etcd-tls-ca, --etcd-tls-cert and "
                                         "--etcd-tls-key"):
        _settings(tmp_path, store=ETCD, **REPLICA, **_deployment(pki))
    settings = _settings(tmp_path, store=ETCD, **REPLICA, **pki)
    assert etcd_tls_of(settings) == EtcdTLS(pki["etcd_tls_ca"], pki["etcd_tls_cert"],
                                            pki["etcd_tls_key"])


def test_the_etcd_files_go_together_and_only_with_an_etcd_store(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    with pytest.raises(ValueError, match="--etcd-tls-ca, --etcd-tls-cert and --etcd-tls-key "
                                         r"go together \(given: --etcd-tls-ca\)"):
        _settings(tmp_path, store=ETCD, **REPLICA, **_deployment(pki),
                  etcd_tls_ca=pki["etcd_tls_ca"])
    etcd_only = {k: v for k, v in pki.items() if k.startswith("etcd_")}
    with pytest.raises(ValueError, match="are for an etcd store"):
        _settings(tmp_path, store=f"sqlite:///{tmp_path / 's.db'}", **etcd_only)


def test_without_tls_etcd_may_be_plain_or_tls(tmp_path: Path, pki: dict[str, Path]) -> None:
    """A development controller (no --tls-*) may reach a plain etcd, or one with TLS."""
    plain = {**REPLICA, "advertise_openflow": "tcp:10.0.0.1:6653"}
    assert etcd_tls_of(_settings(tmp_path, store=ETCD, **plain)) is None
    etcd_only = {k: v for k, v in pki.items() if k.startswith("etcd_")}
    assert etcd_tls_of(_settings(tmp_path, store=ETCD, **plain, **etcd_only)) is not None


def test_the_deployment_ca_as_etcd_ca_is_refused(tmp_path: Path,
                                                 pki: dict[str, Path]) -> None:
    """Pointing --etcd-tls-* at the --tls-* files recreates the gap: refused at start."""
    same = {**pki, "etcd_tls_ca": pki["tls_ca"], "etcd_tls_cert": pki["tls_cert"],
            "etcd_tls_key": pki["tls_key"]}
    with pytest.raises(ValueError, match="holds the deployment's CA"):
        etcd_tls_of(_settings(tmp_path, store=ETCD, **REPLICA, **same))
    # ... also inside a bundle of several CAs
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(pki["etcd_tls_ca"].read_bytes() + pki["tls_ca"].read_bytes())
    with pytest.raises(ValueError, match="holds the deployment's CA"):
        etcd_tls_of(_settings(tmp_path, store=ETCD, **REPLICA, **{**pki,
                                                                    "etcd_tls_ca": bundle}))


def test_etcd_files_that_do_not_load_are_named(tmp_path: Path, pki: dict[str, Path]) -> None:
    missing = tmp_path / "missing.key"
    with pytest.raises(ValueError, match=f"cannot load the certificate .* key {missing}"):
        etcd_tls_of(_settings(tmp_path, store=ETCD, **REPLICA,
                              **{**pki, "etcd_tls_key": missing}))
