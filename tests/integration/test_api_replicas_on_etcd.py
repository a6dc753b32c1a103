"""GET /api/v1/replicas on two replicas of one real etcd (a fresh prefix of the session's
shared 1-member cluster, tests/etcdcluster.py); the rest is tests/unit/api/test_replicas.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cluster.leases import REPLICAS
from tests.unit.api.test_replicas import C0, C1, context, get
from tests.unit.storebackends import Backend, open_backend


@pytest.fixture
def etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request, tmp_path, kind="etcd") as backend:
        yield backend


def test_replicated_every_record_and_the_leader_from_the_store(etcd: Backend) -> None:
    """Two replicas on one etcd prefix: c1 leads; c0, a follower, answers from the
    store what c1 does (no forwarding), and an election under way shows no leader."""
    c0_store, c1_store = etcd.open(), etcd.open()
    for store, record in ((c0_store, C0), (c1_store, C1)):
        store.put(REPLICAS, str(record["name"]), record)
    lease = c1_store.try_lead(C1, ttl=10)
    assert lease is not None
    membership = c1_store.try_lead(C1, ttl=10, key="member/c1")  # c0 is no member
    assert membership is not None
    follower = context(c0_store, replicated=True, replica=C0)
    leader = context(c1_store, replicated=True, replica=C1)
    expected = {
        "leader": "c1", "generation": lease.generation, "assignment_generation": None,
        "replicas": [
            {"name": "c0", "api": "http://198.18.0.1:8080", "openflow": "tcp:198.18.0.1:6653",
             "openflow_remote": "tcp:100.64.0.1:6653", "site": "a", "leader": False,
             "member": False, "switches": []},
            {"name": "c1", "api": "http://198.18.0.2:8080", "openflow": "tcp:198.18.0.2:6653",
             "openflow_remote": "tcp:198.18.0.2:6653", "site": None, "leader": True,
             "member": True, "switches": []},
        ],
    }
    assert get(follower).json() == expected
    assert get(leader).json() == expected
    lease.resign()
    r = get(follower).json()
    assert (r["leader"], r["generation"]) == (None, None)
    assert [x["leader"] for x in r["replicas"]] == [False, False]
    # c0 is elected: a later generation
    again = c0_store.try_lead(C0, ttl=10)
    assert again is not None and again.generation > lease.generation
    r = get(leader).json()
    assert (r["leader"], r["generation"]) == ("c0", again.generation)
    assert [x["leader"] for x in r["replicas"]] == [True, False]
    again.resign()
    membership.resign()
