"""The etcd procedures of docs/operations.md ("etcd upkeep"), run as written with
etcdctl on a real 3-member cluster with TLS: a snapshot taken with `snapshot save`
and restored on every member with `snapshot restore` brings back the desired state
of its moment (and drops what came after), and a member lost for good is replaced
(`member remove`, `member add`, the new member started with an empty data directory
and `--initial-cluster-state existing`) and then holds the data and counts for the
quorum.  The replicas' view is daolinet's own: an Inventory on the etcd store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.desired.inventory import Inventory
from controller.store.etcd.store import EtcdStore
from tests.etcdcluster import EtcdCluster, EtcdError, unique_prefix


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    c = EtcdCluster(3)
    try:
        yield c
    finally:
        c.close()


def inventory(cluster: EtcdCluster, prefix: str) -> tuple[EtcdStore, Inventory]:
    """A replica's store and desired state on the members the cluster has now."""
    store = EtcdStore.from_url(cluster.url(prefix), tls=cluster.client_tls)
    return store, Inventory(store, lambda change: None, replicated=True)


def repeated(cluster: EtcdCluster, *args: str) -> None:
    """`etcdctl ARGS`, repeated for up to 20 s while etcd answers that it cannot yet."""
    deadline = time.monotonic() + 20
    while True:
        try:
            cluster.etcdctl(*args)
            return
        except EtcdError as exc:
            transient = "unhealthy cluster" in str(exc) or "deadline exceeded" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_a_snapshot_restored_on_every_member_brings_back_its_moment(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    prefix = unique_prefix("restore")
    store, inv = inventory(cluster, prefix)
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("web", "10.1.0.0/24")
    inv.add_endpoint("w1", "web", "h1")
    backup = tmp_path / "daolinet-etcd.db"
    cluster.etcdctl("snapshot", "save", str(backup), member=0)
    # the bad change the restore is to undo
    inv.remove_endpoint("w1")
    inv.create_network("after", "10.2.0.0/24")
    store.close()

    cluster.stop_all()
    for i in range(3):
        data = cluster.data_dir(i)
        data.rename(data.with_suffix(".lost"))
        cluster.etcdctl("snapshot", "restore", str(backup), *cluster.restore_args(i))
    for i in range(3):
        cluster.start(i, wait=False)
    cluster.wait_healthy()

    store, inv = inventory(cluster, prefix)
    try:
        assert inv.index.endpoint("w1") is not None, "the snapshot's endpoint is back"
        assert inv.index.network("web") is not None
        assert inv.index.network("after") is None, "a change after the snapshot survived"
        inv.create_network("api", "10.3.0.0/24")  # the restored cluster takes changes
        assert inv.index.network("api") is not None
    finally:
        store.close()


def test_a_member_lost_for_good_is_replaced_and_counts_for_the_quorum(
    cluster: EtcdCluster,
) -> None:
    prefix = unique_prefix("replace")
    store, inv = inventory(cluster, prefix)
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("web", "10.1.0.0/24")
    store.close()

    cluster.lose(2)
    listed = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)
    lost = [m["ID"] for m in listed["members"] if m.get("name") == "m2"]
    assert len(lost) == 1, listed
    # The lost member may have led: the others elect a leader first (the remove times
    # out meanwhile), and right after a removal etcd may refuse the add ("unhealthy
    # cluster" for a few seconds). operations.md says to repeat either.
    repeated(cluster, "member", "remove", format(lost[0], "x"))
    new = cluster.new_member("m3")
    repeated(cluster, "member", "add", "m3", "--peer-urls", new.peer_url)
    cluster.replace(2, new)
    names = sorted(m["name"] for m in json.loads(
        cluster.etcdctl("member", "list", "-w", "json").stdout)["members"])
    assert names == ["m0", "m1", "m3"]

    # the new member holds the data: a store that reaches only it reads the network
    only_new = EtcdStore.from_url(f"etcd://{new.endpoint}/{prefix}", tls=cluster.client_tls)
    try:
        assert Inventory(only_new, lambda change: None,
                         replicated=True).index.network("web") is not None
    finally:
        only_new.close()
    # and it votes: with one of the old members down, m1 and m3 are a quorum
    cluster.kill(0)
    store, inv = inventory(cluster, prefix)
    try:
        inv.create_network("api", "10.3.0.0/24")
        assert inv.index.network("api") is not None
    finally:
        store.close()
