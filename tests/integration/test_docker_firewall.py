"""Docker as installed, its firewall on: dockerd with `"iptables": true` and
`"ip-forward": true` sets the FORWARD policy to DROP, and daolinet's traffic between
hosts is forwarded by the host's kernel.  The agent keeps its accept rules at the head
of DOCKER-USER (hostnet/host/forwarding.py): containers on two hosts reach each
other; with the rules taken away the same traffic is dropped (so the rules are what
lets it through), and within the agent's check interval they are back and so is
the traffic.  Docker's own rules and its docker0 bridge stay as Docker made them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import DockerLab, make_docker_lab
from testbed import Testbed

NET = ["-d", "daolinet", "--ipam-driver", "daolinet"]
KEEP_EVERY = 5.0  # hostnet/agent/agent.py FORWARDING_EVERY


@pytest.fixture(scope="module")
def lab() -> Iterator[DockerLab]:
    with make_docker_lab(firewall=True) as lab:
        yield lab


def rules(tb: Testbed, host: str, chain: str) -> list[str]:
    out = tb.exec(tb.host(host), "iptables", "-w", "5", "-S", chain)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def ours(tb: Testbed, host: str) -> list[str]:
    return [r for r in rules(tb, host, "DOCKER-USER") if "daolinet" in r]


def test_containers_on_two_hosts_talk_through_dockers_drop_policy(lab: DockerLab) -> None:
    tb, d1, d2 = lab.tb, lab.d1, lab.d2
    for host in ("h1", "h2"):
        forward = rules(tb, host, "FORWARD")
        assert "-P FORWARD DROP" in forward, forward  # Docker's firewall, as installed
        assert "-A FORWARD -j DOCKER-USER" in forward, forward
        tb.wait_until(lambda h=host: len(ours(tb, h)) == 2, 3 * KEEP_EVERY,
                      f"the agent of {host} did not add its DOCKER-USER rules",
                      detail=lambda h=host: "\n".join(rules(tb, h, "DOCKER-USER")))
        user = rules(tb, host, "DOCKER-USER")
        # ours first, Docker's own RETURN (if it has one) after them
        assert all("daolinet" in r for r in user[1:3]), user
        assert {r.split(" -m ")[0] for r in ours(tb, host)} == {
            "-A DOCKER-USER -i br-dl", "-A DOCKER-USER -o br-dl"}

    d1.ok("network", "create", *NET, "--subnet", "10.40.0.0/24", "fw")
    tb.wait_until(lambda: "fw" in d2.ok("network", "ls", "--format", "{{.Name}}").split(),
                  10, "fw did not appear in h2's Docker engine")
    d1.run("f1", "fw")
    d2.run("f2", "fw")
    c1, c2 = d1.attach_netns("f1", "fw"), d2.attach_netns("f2", "fw")
    assert tb.ping(c2, c1.ip, count=2), "no ping between hosts with Docker's firewall on"
    assert tb.tcp_ok(c1, c2)

    # Take h1's rules away: the same traffic is dropped by Docker's FORWARD policy ...
    for rule in ours(tb, "h1"):
        spec = rule.replace("-A DOCKER-USER ", "", 1)
        out = tb.exec(tb.host("h1"), "sh", "-c", f"iptables -w 5 -D DOCKER-USER {spec}")
        assert out.returncode == 0, out.stderr
    assert not tb.ping(c2, c1.ip, count=2, timeout=1), \
        "traffic passed without the rules: this test shows nothing"
    # ... until the agent puts them back, at the head of the chain
    tb.wait_until(lambda: len(ours(tb, "h1")) == 2, 3 * KEEP_EVERY,
                  "the agent did not put its DOCKER-USER rules back")
    assert tb.wait_until(lambda: tb.ping(c2, c1.ip, count=1, timeout=1), 10,
                         "no ping after the rules came back")
    assert any("docker0" in r for r in rules(tb, "h1", "FORWARD")), \
        "Docker's own rules for docker0 are gone"
