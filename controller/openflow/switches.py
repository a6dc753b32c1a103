"""The switches connected to this replica, and the one way the runtime writes to
them.

Made before the runtime (which sends through it) and given to the OpenFlow app
(which adds and removes the switches as they connect and go): neither needs the
other to exist first.  Nothing is written to a switch this replica is not master
of, or once the lease behind its roles ran out (controller/cluster/roles.py).
"""

from __future__ import annotations

from typing import Any

from controller.cluster.roles import Roles
from controller.datapath.messages import OFMessage
from controller.openflow.codec import translate


class Switches:
    def __init__(self, roles: Roles) -> None:
        self.roles = roles
        self._datapaths: dict[int, Any] = {}  # dpid -> os-ken Datapath

    def add(self, dp: Any) -> None:
        self._datapaths[dp.id] = dp

    def remove(self, dp: Any) -> bool:
        """Forget `dp` if it is still the switch's connection (not a newer one)."""
        dpid: int | None = dp.id
        if dpid is None or self._datapaths.get(dpid) is not dp:
            return False
        del self._datapaths[dpid]
        return True

    def get(self, dpid: int) -> Any | None:
        return self._datapaths.get(dpid)

    def all(self) -> list[Any]:
        return list(self._datapaths.values())

    def send(self, dpid: int, msgs: list[OFMessage]) -> None:
        """Serialize a switch's messages and hand them to os-ken as one write.

        One queue hand-off and one syscall instead of one per message: this is on
        the first-packet path.  Nothing is sent unless this replica is master.
        """
        dp = self._datapaths.get(dpid)
        if dp is None or not self.roles.is_master(dpid) or not self.roles.lease_valid():
            return
        bufs = []
        for msg in msgs:
            ofmsg = translate(dp, msg)
            dp.set_xid(ofmsg)
            ofmsg.serialize()
            bufs.append(bytes(ofmsg.buf))
        dp.send(b"".join(bufs))
