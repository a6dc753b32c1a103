"""The agent stream's messages: the wire format both ends rely on (JSON field names
and values, null fields of routes and NAT rules left out)."""

from __future__ import annotations

from controller.agents.messages import (
    Ack,
    CommandMessage,
    DeltaMessage,
    MeshHost,
    MeshMessage,
    Nack,
    NatMessage,
    Result,
    SnapshotMessage,
    parse_reply,
)
from controller.desired.models import Host, KernelRoute, NatRule

VIA = {"kind": "via", "dst": "10.1.0.6", "via": "198.18.0.12"}
LOCAL = {"kind": "local", "dst": "10.1.0.5", "lladdr": "02:da:0a:01:00:05"}
DNAT = {"kind": "dnat", "protocol": "tcp", "address": "198.18.0.1", "port": 80,
        "to": "10.1.0.5", "to_port": 8080}


def test_route_messages_leave_out_null_fields():
    routes = [KernelRoute.model_validate(VIA), KernelRoute.model_validate(LOCAL)]
    assert SnapshotMessage(seq=1, routes=routes).wire() == {
        "type": "snapshot", "seq": 1, "routes": [VIA, LOCAL]}
    assert DeltaMessage(seq=2, add=routes[:1], remove=routes[1:]).wire() == {
        "type": "delta", "seq": 2, "add": [VIA], "remove": [LOCAL]}
    # the hub builds them from the runtime's dicts as well
    assert SnapshotMessage.model_validate({"seq": 1, "routes": [VIA]}).wire()["routes"] == [VIA]


def test_nat_mesh_and_command():
    rule = NatRule.model_validate(DNAT)
    as_sent = rule.model_dump(mode="json", exclude_none=True)  # what the hub always sent
    assert NatMessage(seq=3, rules=[rule]).wire() == {"type": "nat", "seq": 3,
                                                      "rules": [as_sent]}
    host = {"name": "h1", "site": "s1", "wg_public_key": None, "wg_endpoint": None,
            "tunnel_address": "10.99.0.1", "relay": False}
    registered = Host.model_validate(
        host | {"address": "198.18.0.11", "dpid": 1, "registered_at": 1.0})
    assert MeshMessage(seq=4, hosts=[MeshHost.of(registered)]).wire() == {
        "type": "mesh", "seq": 4, "hosts": [host]}
    assert CommandMessage(seq=5, op="docker-run", args={"ip": None}).wire() == {
        "type": "command", "seq": 5, "op": "docker-run", "args": {"ip": None}}


def test_replies():
    assert Ack(seq=1).wire() == {"type": "ack", "seq": 1}
    assert Nack(seq=2, error="boom").wire() == {"type": "nack", "seq": 2, "error": "boom"}
    assert Result(seq=3, ok=True, data={"subnet": None}).wire() == {
        "type": "result", "seq": 3, "ok": True, "data": {"subnet": None}}
    assert Result(seq=3, ok=False, error="no").wire() == {
        "type": "result", "seq": 3, "ok": False, "error": "no"}
    assert parse_reply({"type": "ack", "seq": 1}) == Ack(seq=1)
    assert parse_reply({"type": "result", "seq": 3, "ok": False}) == Result(
        seq=3, ok=False, data={})
    assert parse_reply({"type": "nack"}) is None  # no seq
    assert isinstance(parse_reply({"type": "other", "seq": 4}), Nack)
