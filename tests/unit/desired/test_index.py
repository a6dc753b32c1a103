"""The desired index publishes immutable versions: a pinned view never changes, a
batch publishes once, and a writer reads its own batch in progress."""

from __future__ import annotations

import ipaddress
import threading

from controller.desired.index import DesiredIndex, PMap
from controller.desired.models import Endpoint, Host

IP = ipaddress.IPv4Address


def host(name: str, dpid: int) -> Host:
    return Host(name=name, address=IP(f"198.18.0.{10 + dpid}"), dpid=dpid)


def endpoint(name: str, ip: str, host: str = "h1") -> Endpoint:
    return Endpoint(id=name, name=name, network="web", host=host, ip=IP(ip),
                    mac="02:da:0a:01:00:05", port=f"p-{name}")


def test_a_view_is_pinned_while_the_index_moves_on() -> None:
    index = DesiredIndex()
    index.put_host(host("h1", 1))
    before = index.view()
    index.put_endpoint(endpoint("a", "10.1.0.5"))
    index.drop_host("h1")
    assert before.host("h1") is not None and before.endpoint_by_ip(IP("10.1.0.5")) is None
    now = index.view()
    assert now.host("h1") is None and now.endpoint("a") is not None
    assert index.host("h1") is None and index.endpoint("a") is not None


def test_a_batch_publishes_once_and_its_writer_reads_it_meanwhile() -> None:
    index = DesiredIndex()
    before = index.view()
    seen_elsewhere: list[object] = []
    with index.batch():
        index.put_host(host("h1", 1))
        index.put_endpoint(endpoint("a", "10.1.0.5"))
        assert index.view() is before, "nothing published inside the batch"
        assert index.host("h1") is not None, "the writer reads its own writes"
        other = threading.Thread(target=lambda: seen_elsewhere.append(index.host("h1")))
        other.start()
        other.join()
    assert seen_elsewhere == [None], "another thread sees the published version only"
    after = index.view()
    assert after is not before
    assert after.host("h1") is not None and after.endpoint_by_port("h1", "p-a") is not None


def test_writes_copy_only_the_tables_they_touch() -> None:
    index = DesiredIndex()
    index.put_host(host("h1", 1))
    first = index.view()
    index.put_endpoint(endpoint("a", "10.1.0.5"))
    second = index.view()
    assert second._tables().hosts is first._tables().hosts
    assert second._tables().endpoints is not first._tables().endpoints


def test_a_persistent_table_shares_all_but_the_bucket_a_write_touches() -> None:
    empty: PMap[int, str] = PMap()
    one = empty.set(1, "a")
    many = one
    for i in range(2, 2000):
        many = many.set(i, str(i))
    assert (len(empty), len(one), len(many)) == (0, 1, 1999)
    assert one.get(2) is None and many[2] == "2" and 1999 in many
    fewer = many.discard(7).discard(123456)
    assert 7 in many and 7 not in fewer and len(fewer) == 1998
    shared = sum(a is b for a, b in zip(many._buckets, fewer._buckets, strict=True))
    assert shared == len(many._buckets) - 1
    assert sorted(fewer) == sorted(k for k, _ in fewer.items()) == [
        k for k in range(1, 2000) if k != 7
    ]


def test_endpoints_are_found_by_host_and_mac_in_every_version() -> None:
    index = DesiredIndex()
    index.put_endpoint(endpoint("a", "10.1.0.5"))
    index.put_endpoint(endpoint("b", "10.1.0.6", host="h2").model_copy(
        update={"mac": "02:da:0a:01:00:06"}))
    first = index.view()
    index.put_endpoint(first.endpoint("b").model_copy(update={"host": "h1"}))  # type: ignore[union-attr]
    index.drop_endpoint("a")
    assert [e.name for e in first.endpoints(host="h2")] == ["b"]
    assert first.endpoint_by_mac("02:da:0a:01:00:05") == first.endpoint("a")
    assert [e.name for e in index.endpoints(host="h1")] == ["b"]
    assert index.endpoints(host="h2") == [] and index.endpoint_by_mac("02:da:0a:01:00:05") is None
    assert index.endpoint_by_mac("02:da:0a:01:00:06") == index.endpoint("b")
    assert index.addresses_freed == 1  # "a" left its address; "b" moved with its own
