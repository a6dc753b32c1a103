"""Who may reach whom: the decision taken at the first packet of a connection."""

from __future__ import annotations

import enum

from controller.desired import DesiredIndex
from controller.models import Endpoint


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


def decide(src: Endpoint, dst: Endpoint, index: DesiredIndex) -> Verdict:
    """Containers of one network reach each other; everything else is denied."""
    return Verdict.ALLOW if src.network == dst.network else Verdict.DENY
