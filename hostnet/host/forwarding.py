"""Let daolinet's routed traffic through Docker's firewall.

Docker run as installed (`"iptables": true`, `"ip-forward": true`) sets the policy of
the FORWARD chain to DROP and sends every forwarded packet through the chain
DOCKER-USER first, the one chain Docker leaves to the host's operator (it creates
it, never flushes it, and keeps its jump at the head of FORWARD).  daolinet's
traffic between hosts is forwarded by the host's kernel: from `br-dl` to the
underlay or the WireGuard interface and back, and from one tunnel peer to another on
a relay.  So the agent keeps accept rules for exactly that at the head of
DOCKER-USER:

* `-i br-dl -j ACCEPT` and `-o br-dl -j ACCEPT`: what the switch let out of a
  container, and what is routed to one (what crosses br-dl was decided by the
  switch's flows already: policy lives there, not in the host's firewall);
* `-i WG -o WG -j ACCEPT` with a WireGuard interface: a relay's traffic between
  sites.

Each carries the comment `daolinet` so that an operator (and `iptables -S`) sees
whose it is.  Nothing else is touched; without a DOCKER-USER chain (Docker runs with
`"iptables": false`, or is not installed) nothing is done.  The agent checks every
few seconds, since dockerd may start after it or restart (docs/operations.md,
"Docker as people run it").  The rules stay when the agent stops: established routes
keep working without it.  `iptables` is the system's own command, so the rules go
wherever Docker's go (iptables-nft or legacy).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

CHAIN = "DOCKER-USER"
COMMENT = "daolinet"


class ForwardingError(Exception):
    """iptables failed; the message says why."""


def wanted_rules(bridge: str, tunnel: str | None) -> list[list[str]]:
    """The rule specifications (without the chain) daolinet keeps in DOCKER-USER."""
    rules = [["-i", bridge], ["-o", bridge]]
    if tunnel:
        rules.append(["-i", tunnel, "-o", tunnel])
    return [[*r, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"] for r in rules]


class DockerForwarding:
    """Keeps `wanted_rules` at the head of DOCKER-USER when that chain exists."""

    def __init__(self, bridge: str, tunnel: str | None = None,
                 iptables: str = "iptables") -> None:
        self.rules = wanted_rules(bridge, tunnel)
        self.iptables = iptables

    def ensure(self) -> list[str]:
        """Insert the rules DOCKER-USER lacks (in order, at its head); return them as
        iptables prints them.  Nothing without iptables or without the chain."""
        if shutil.which(self.iptables) is None or not self._has_chain():
            return []
        added = []
        for position, rule in enumerate(self.rules, start=1):
            if self._run("-C", CHAIN, *rule, check=False).returncode == 0:
                continue
            self._run("-I", CHAIN, str(position), *rule)
            added.append(" ".join(rule))
        return added

    def _has_chain(self) -> bool:
        return self._run("-S", CHAIN, check=False).returncode == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # -w: wait for the xtables lock (dockerd may hold it) instead of failing
        cmd: Sequence[str] = [self.iptables, "-w", "5", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=15,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ForwardingError(f"{' '.join(cmd)}: {exc}") from None
        if check and done.returncode != 0:
            raise ForwardingError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
        return done
