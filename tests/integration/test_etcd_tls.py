"""etcd with client and peer TLS and client-certificate authentication (docs/security.md,
"etcd"): the issue's attack - a plain request from the underlay listing daolinet's key
space - and clients without a certificate, or with one from another CA, are refused;
etcd trusts its own CA only, so a Docker host's certificate of the deployment CA can
neither read nor write the store; the controller's store client, with the replica's
etcd client certificate (of the etcd CA), works."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from controller.store.base import StoreUnavailable
from controller.store.etcd.client import EtcdTLS, b64
from controller.store.etcd.store import EtcdStore
from tests.etcdcluster import EtcdCluster, unique_prefix
from tests.pki import Issued, TestCA

RANGE_ALL = {"key": b64(b"\0"), "range_end": b64(b"\0")}  # every key


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as c:
        yield c


@pytest.fixture
def prefix() -> str:
    return unique_prefix("tls")


def _url(cluster: EtcdCluster, path: str, scheme: str = "https") -> str:
    return f"{scheme}://{cluster.endpoints[0]}/v3{path}"


def _tls(cluster: EtcdCluster) -> EtcdTLS:
    assert cluster.client_tls is not None
    return cluster.client_tls


def test_the_controller_client_reads_writes_and_watches(cluster: EtcdCluster,
                                                        prefix: str) -> None:
    store = EtcdStore.from_url(cluster.url(prefix), tls=_tls(cluster))
    try:
        seen: list[object] = []
        store.watch(store.revision(), lambda events: seen.extend(events))
        store.put("hosts", "h1", {"dpid": 1})
        assert store.get("hosts", "h1") == {"dpid": 1}
        for _ in range(50):
            if seen:
                break
            time.sleep(0.05)
        assert seen, "no watch event over TLS"
    finally:
        store.close()


def test_a_plain_http_request_gets_no_key(cluster: EtcdCluster, prefix: str) -> None:
    """The issue's attack: a plain HTTP request to port 2379 listed the key space."""
    store = EtcdStore.from_url(cluster.url(prefix), tls=_tls(cluster))
    store.put("docs", "secret", {"x": 1})
    store.close()
    try:
        resp = requests.post(_url(cluster, "/kv/range", "http"), json=RANGE_ALL, timeout=3)
    except requests.exceptions.ConnectionError:
        return  # the connection was dropped: refused
    # Go's TLS server answers plain HTTP with a 400 and nothing else
    assert resp.status_code == 400
    assert prefix not in resp.text and b64(prefix.encode()) not in resp.text


def test_a_client_without_certificate_is_refused(cluster: EtcdCluster) -> None:
    tls = _tls(cluster)
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(_url(cluster, "/kv/range"), json=RANGE_ALL, timeout=3,
                      verify=str(tls.ca))
    # ... and the same request with the controller's certificate is served
    resp = requests.post(_url(cluster, "/kv/range"), json=RANGE_ALL, timeout=3,
                         verify=str(tls.ca), cert=(str(tls.cert), str(tls.key)))
    assert resp.status_code == 200


def test_a_certificate_of_another_ca_is_refused(cluster: EtcdCluster, prefix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        rogue_ca = TestCA(Path(d) / "rogue")
        rogue = rogue_ca.issue("c1", "controller")
        tls = EtcdTLS(_tls(cluster).ca, rogue.cert_file, rogue.key_file)
        store = EtcdStore.from_url(cluster.url(prefix), tls=tls, retry_for=0.3, timeout=1.0)
        try:
            with pytest.raises(StoreUnavailable, match="TLS handshake failed"):
                store.put("hosts", "h1", {"dpid": 1})
        finally:
            store.close()


def _refused(cluster: EtcdCluster, path: str, body: dict[str, str], cert: Issued) -> None:
    """The request with this certificate fails in the TLS handshake (TLS 1.3 may
    report the server's refusal of our certificate as the connection closing)."""
    assert cluster.ca is not None
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.post(_url(cluster, path), json=body, timeout=3,
                      verify=str(cluster.ca.cert_file),
                      cert=(str(cert.cert_file), str(cert.key_file)))


def test_a_host_certificate_of_the_deployment_ca_can_neither_read_nor_write(
    cluster: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    """A compromised Docker host holds a certificate of the deployment CA: etcd, which
    trusts only the etcd CA, refuses it - and the replica's deployment certificate
    too (a replica reaches etcd only with its etcd client certificate)."""
    deployment = TestCA(tmp_path / "pki")
    key = b64(f"{prefix}/docs/hosts/h2".encode())
    replica = EtcdStore.from_url(cluster.url(prefix), tls=_tls(cluster))
    try:
        replica.put("hosts", "h2", {"dpid": 2})
        for issued in (deployment.issue("h1", "host", ips=["127.0.0.1"]),
                       deployment.issue("c1", "controller", ips=["127.0.0.1"])):
            _refused(cluster, "/kv/range", RANGE_ALL, issued)
            _refused(cluster, "/kv/put", {"key": key, "value": b64(b"{}")}, issued)
            _refused(cluster, "/kv/deleterange", {"key": key}, issued)
        # ... while the replica's etcd client certificate reads and writes, and finds
        # the document as it wrote it
        assert replica.get("hosts", "h2") == {"dpid": 2}
        replica.put("hosts", "h2", {"dpid": 3})
        assert replica.get("hosts", "h2") == {"dpid": 3}
    finally:
        replica.close()


def test_a_replica_etcd_certificate_of_the_etcd_ca_works(cluster: EtcdCluster,
                                                         prefix: str) -> None:
    """What a deployment gives a replica (and the testbed does): a certificate of the
    etcd CA, OU=controller, CN=the replica's name."""
    assert cluster.ca is not None
    issued = cluster.ca.issue("c7", "controller", ips=["127.0.0.1"],
                              file_stem=f"{cluster.token}-c7")
    store = EtcdStore.from_url(cluster.url(prefix),
                               tls=EtcdTLS(cluster.ca.cert_file, issued.cert_file,
                                           issued.key_file))
    try:
        store.put("networks", "blue", {"subnet": "10.1.0.0/24"})
        assert store.get("networks", "blue") == {"subnet": "10.1.0.0/24"}
    finally:
        store.close()


def test_a_member_of_another_ca_is_not_trusted(cluster: EtcdCluster, prefix: str) -> None:
    """The client verifies etcd too: a CA that did not sign the member fails."""
    with tempfile.TemporaryDirectory() as d:
        other = TestCA(Path(d) / "other")
        tls = EtcdTLS(other.cert_file, _tls(cluster).cert, _tls(cluster).key)
        store = EtcdStore.from_url(cluster.url(prefix), tls=tls, retry_for=0.3, timeout=1.0)
        try:
            with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                store.get("hosts", "h1")
        finally:
            store.close()


def test_the_peer_port_requires_a_member_certificate(cluster: EtcdCluster) -> None:
    """Peer TLS with --peer-client-cert-auth: a client without certificate cannot
    talk raft or read the member list; a member's certificate can."""
    member = cluster.members[0]
    assert cluster.ca is not None
    url = f"https://127.0.0.1:{member.peer_port}/members"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=3, verify=str(cluster.ca.cert_file))
    pki = cluster.ca.directory
    stem = f"{cluster.token}-m0"
    resp = requests.get(url, timeout=3, verify=str(cluster.ca.cert_file),
                        cert=(str(pki / f"{stem}.crt"), str(pki / f"{stem}.key")))
    assert resp.status_code == 200 and "m0" in resp.text
