"""The incremental names tables (controller/agents/names_cache.py) answer exactly what
the full computation (`host_names`) answers, after any sequence of changes: starts,
stops, moves, renames, pair policies, groups, rules and networks, applied one change
at a time as the inventory announces them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.agents.names import host_names
from controller.agents.names_cache import NamesCache
from controller.desired.errors import InventoryError
from controller.desired.events import Change
from controller.desired.inventory import Inventory
from controller.store.sqlite import SqliteStore

HOSTS = ("h1", "h2", "h3")
NETWORKS = {"web": "10.1.0.0/24", "api": "10.2.0.0/24", "db": "10.3.0.0/24"}
CONTAINERS = ("c0", "c1", "c2", "c3", "c4", "c5")
PORTS = ((), ("80",), ("1000-2000",), ("53", "5432"))

Op = Callable[[Inventory], object]

containers = st.sampled_from(CONTAINERS)
networks = st.sampled_from(sorted(NETWORKS))
hosts = st.sampled_from(HOSTS)
sources = st.one_of(
    st.just(("any", None)), st.tuples(st.just("network"), networks),
    st.tuples(st.just("group"), st.just("g")), st.tuples(st.just("container"), containers),
    st.tuples(st.just("cidr"), st.sampled_from(["10.1.0.0/28", "10.2.0.0/24"])),
)


def _rule(target: tuple[str, str], action: str, source: tuple[str, str | None], proto: str,
          ports: tuple[str, ...], first: bool) -> Op:
    kind, value = source
    ports = () if proto in ("icmp", "any") else ports
    return lambda inv: inv.add_rule(target[0], target[1], action, kind, value, proto, ports,
                                    position=0 if first else None)


def _delete_first_rule(inv: Inventory) -> object:
    rules = inv.rules()
    return inv.delete_rule(rules[0].id) if rules else None


OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(lambda c, n, h: lambda inv: inv.add_endpoint(c, n, h), containers, networks, hosts),
    st.builds(lambda c: lambda inv: inv.remove_endpoint(c), containers),
    st.builds(lambda c, h: lambda inv: inv.relocate_endpoint(c, h), containers, hosts),
    st.builds(lambda c, new: lambda inv: inv.update_endpoint(c, name=new), containers, containers),
    st.builds(lambda c, a: lambda inv: inv.update_endpoint(c, aliases=a, hostname="box-" + c),
              containers, st.lists(st.sampled_from(["api", "www", "x"]), max_size=2, unique=True)),
    st.builds(lambda a, b, act: lambda inv: inv.set_pair_policy(a, b, act), containers, containers,
              st.sampled_from(["allow", "deny"])),
    st.builds(lambda a, b: lambda inv: inv.clear_pair_policy(a, b), containers, containers),
    st.builds(lambda ns: lambda inv: inv.create_group("g", ns),
              st.lists(networks, max_size=2, unique=True)),
    st.just(lambda inv: inv.delete_group("g")),
    st.builds(lambda n: lambda inv: inv.add_group_member("g", n), networks),
    st.builds(lambda n: lambda inv: inv.remove_group_member("g", n), networks),
    st.builds(_rule, st.one_of(st.tuples(st.just("network"), networks),
                               st.just(("group", "g"))),
              st.sampled_from(["allow", "deny"]), sources,
              st.sampled_from(["tcp", "udp", "icmp", "any"]), st.sampled_from(PORTS),
              st.booleans()),
    st.just(_delete_first_rule),
    st.builds(lambda n: lambda inv: inv.delete_network(n), networks),
    st.builds(lambda n: lambda inv: inv.create_network(n, NETWORKS[n]), networks),
    st.builds(lambda n, ext: lambda inv: inv.set_network_external(n, ext), networks,
              st.booleans()),
)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=25))
def test_incremental_tables_equal_the_full_computation(ops: list[Op]) -> None:
    changes: list[Change] = []
    store = SqliteStore(":memory:")  # a fresh state for every example
    try:
        inv = Inventory(store, changes.append)
        for host, address in zip(HOSTS, ("198.18.0.11", "198.18.0.12", "198.18.0.13"),
                                 strict=True):
            inv.register_host(host, address)
        for name, subnet in NETWORKS.items():
            inv.create_network(name, subnet)
        for i, name in enumerate(CONTAINERS[:4]):
            inv.add_endpoint(name, sorted(NETWORKS)[i % 3], HOSTS[i % 3])
        cache = NamesCache()
        for host in HOSTS:  # cached before the changes: what follows is incremental
            cache.table(inv.index.view(), host)
        for op in ops:
            changes.clear()
            with contextlib.suppress(InventoryError):
                op(inv)
            view = inv.index.view()
            for change in changes:
                cache.apply(view, change)
            for host in HOSTS:
                assert cache.table(view, host) == host_names(view, host), (host, changes)
    finally:
        store.close()


def test_an_unchanged_table_is_not_computed_again(tmp_path: Path) -> None:
    """A change touches only the hosts whose tables it moves (what the hub sends)."""
    changes: list[Change] = []
    store = SqliteStore(tmp_path / "names.db")
    inv = Inventory(store, changes.append)
    for host, address in (("h1", "198.18.0.11"), ("h2", "198.18.0.12")):
        inv.register_host(host, address)
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("db", "10.3.0.0/24")
    inv.add_endpoint("w1", "web", "h1")
    inv.add_endpoint("d2", "db", "h2")
    cache = NamesCache()
    before = {h: cache.table(inv.index.view(), h) for h in ("h1", "h2")}
    changes.clear()
    inv.add_endpoint("d3", "db", "h2")  # db only: w1 on h1 may not reach it
    (change,) = changes
    assert cache.apply(inv.index.view(), change) == {"h2"}
    assert cache.table(inv.index.view(), "h1") == before["h1"]
    changes.clear()
    inv.set_pair_policy("w1", "d3", "allow")
    (change,) = changes
    assert cache.apply(inv.index.view(), change) == {"h1", "h2"}
    assert "d3" in {p.names[0] for t in cache.table(inv.index.view(), "h1") for p in t.peers}
    store.close()


def test_a_group_joined_by_the_source_network_meets_a_rule_elsewhere(tmp_path: Path) -> None:
    """A rule on db refuses sources of group g; web joining g changes web's rows,
    although db is not in the group (so the change names web only)."""
    changes: list[Change] = []
    store = SqliteStore(tmp_path / "names.db")
    inv = Inventory(store, changes.append)
    inv.register_host("h1", "198.18.0.11")
    inv.create_network("web", "10.1.0.0/24")
    inv.create_network("db", "10.3.0.0/24")
    inv.add_endpoint("w1", "web", "h1")
    inv.add_endpoint("d1", "db", "h1")
    inv.create_group("g")
    inv.add_rule("network", "db", "deny", "group", "g")
    inv.add_rule("network", "db", "allow", "network", "web")
    cache = NamesCache()
    assert "d1" in {p.names[0] for t in cache.table(inv.index.view(), "h1") for p in t.peers}
    changes.clear()
    inv.add_group_member("g", "web")
    for change in changes:
        cache.apply(inv.index.view(), change)
    assert cache.table(inv.index.view(), "h1") == host_names(inv.index.view(), "h1")
    assert "d1" not in {p.names[0] for t in cache.table(inv.index.view(), "h1") for p in t.peers
                        if str(t.source) == str(inv.endpoint("w1").ip)}
    store.close()
