"""The agent's NAT set as an nft script (hostnet/host/nat.py)."""

from __future__ import annotations

import ipaddress

from controller.desired.models import NatRule
from hostnet.host.nat import ruleset


def test_ruleset_replaces_the_daolinet_table_atomically() -> None:
    rules = [
        NatRule(kind="dnat", protocol="tcp", address=ipaddress.IPv4Address("198.18.0.12"),
                port=8080, to=ipaddress.IPv4Address("10.1.0.6"), to_port=80),
        NatRule(kind="masquerade", source=ipaddress.IPv4Network("10.1.0.0/24"),
                exclude=(ipaddress.IPv4Network("10.1.0.0/24"),
                         ipaddress.IPv4Network("172.31.7.0/24"))),
    ]
    script = ruleset(rules)
    lines = [line.strip() for line in script.splitlines()]
    assert lines[:3] == ["table ip daolinet {}", "delete table ip daolinet",
                         "table ip daolinet {"]
    assert lines.count("ip daddr 198.18.0.12 tcp dport 8080 dnat to 10.1.0.6:80") == 2
    assert "ip saddr 10.1.0.0/24 ip daddr != { 10.1.0.0/24, 172.31.7.0/24 } masquerade" in lines


def test_empty_set_leaves_empty_chains() -> None:
    script = ruleset([])
    assert "dnat" not in script.replace("priority dstnat", "") and "masquerade" not in script
