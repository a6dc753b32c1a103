"""Host-kernel NAT the controller streams (published ports, masquerade).

The agent holds exactly the rules of the last `nat` message in one nftables table
`ip daolinet` (level-triggered, like routes): every message replaces the whole
table in one `nft -f` transaction, so there is never a moment with half a set.
Nothing outside that table is touched.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from controller.desired.models import NatRule

TABLE = "daolinet"


class NatError(Exception):
    """nft failed; the message says why."""


def ruleset(rules: Sequence[NatRule]) -> str:
    """The nft script that makes table `ip daolinet` hold exactly `rules`."""
    dnat: list[str] = []
    masq: list[str] = []
    for r in rules:
        if r.kind == "dnat":
            if None in (r.protocol, r.address, r.port, r.to, r.to_port):
                raise ValueError(f"incomplete dnat rule {r}")
            dnat.append(
                f"ip daddr {r.address} {r.protocol} dport {r.port} dnat to {r.to}:{r.to_port}"
            )
        else:
            if r.source is None:
                raise ValueError(f"masquerade rule without a source: {r}")
            exclude = ", ".join(str(n) for n in (r.exclude or (r.source,)))
            masq.append(f"ip saddr {r.source} ip daddr != {{ {exclude} }} masquerade")
    lines = [
        f"table ip {TABLE} {{}}",  # so that the delete below never fails
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *(f"    {line}" for line in dnat),
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        *(f"    {line}" for line in dnat),
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *(f"    {line}" for line in masq),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class NatTable:
    """Applies NAT sets with the `nft` command (in the agent's network namespace)."""

    def __init__(self, nft: str = "nft") -> None:
        self.nft = nft
        self.current: list[NatRule] | None = None

    def apply(self, rules: Sequence[NatRule]) -> None:
        if self.current is not None and list(rules) == self.current:
            return  # level-triggered: already held
        if not rules and self.current is None and not self._table_exists():
            self.current = []
            return  # nothing to hold and nothing held: no need for nft at all
        script = ruleset(rules)
        binary = shutil.which(self.nft)
        if binary is None:
            raise NatError(f"`{self.nft}` not found: install nftables for published ports "
                           "and external networks")
        proc = subprocess.run([binary, "-f", "-"], input=script, capture_output=True,
                              text=True, timeout=10, check=False)
        if proc.returncode != 0:
            raise NatError(f"nft failed: {' '.join(proc.stderr.split())}")
        self.current = list(rules)

    def _table_exists(self) -> bool:
        binary = shutil.which(self.nft)
        if binary is None:
            return False
        proc = subprocess.run([binary, "list", "table", "ip", TABLE], capture_output=True,
                              text=True, timeout=10, check=False)
        return proc.returncode == 0
