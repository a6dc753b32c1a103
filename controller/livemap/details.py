"""What the map shows for one container it was clicked on (pure: no I/O): its
network, the groups of that network, the pair policies that name it, the firewall
rules that guard it (its network's and its groups', in order) and its published
ports.  Its recent connections come from the connection log (controller/livemap/routes.py).
"""

from __future__ import annotations

from typing import Any

from controller.desired.errors import NotFound
from controller.desired.index import DesiredReads
from controller.desired.models import FirewallRule

MAX_RULES = 200  # rules shown for one container (its network's and its groups')


def container_details(desired: DesiredReads, name: str) -> dict[str, Any]:
    """The container `name`'s record and the policy around it; NotFound (404)
    naming it if there is none."""
    ep = desired.endpoint(name)
    if ep is None:
        raise NotFound(f"container {name} not found")
    host = desired.host(ep.host)
    network = desired.network(ep.network)
    groups = sorted(desired.groups_of_network(ep.network))
    rules: list[FirewallRule] = list(desired.rules_for("network", ep.network))
    for g in groups:
        rules.extend(desired.rules_for("group", g))
    return {
        "name": ep.name,
        "id": ep.id,
        "ip": str(ep.ip),
        "mac": ep.mac,
        "host": ep.host,
        "site": host.site if host is not None else None,
        "docker_id": ep.docker_id,
        "network": None if network is None else {
            "name": network.name, "subnet": str(network.subnet),
            "external": network.external, "internal": network.internal},
        "groups": groups,
        "policies": [{"a": p.a, "b": p.b, "action": p.action}
                     for p in desired.pair_policies(ep.name)],
        "rules": [_rule(r) for r in rules[:MAX_RULES]],
        "rules_truncated": max(0, len(rules) - MAX_RULES),
        "published": [{"protocol": p.protocol, "host_port": p.host_port,
                       "container_port": p.container_port}
                      for p in desired.published_ports(ep.name)],
    }


def _rule(r: FirewallRule) -> dict[str, Any]:
    return {"id": r.id, "on": f"{r.target_kind} {r.target}", "action": r.action,
            "source": r.source.kind if r.source.value is None
            else f"{r.source.kind} {r.source.value}",
            "protocol": r.protocol, "ports": list(r.ports)}
