"""The switches connected to this replica, and the one way the runtime writes to
them.

Made before the runtime (which sends through it) and given to the OpenFlow app
(which adds and removes the switches as they connect and go): neither needs the
other to exist first.  Nothing is written to a switch this replica is not master
of, or once the lease behind its roles ran out (controller/cluster/roles.py).

A datapath id may have more than one admitted connection for a while (a switch
reconnecting before its old connection is seen dead; without TLS, anyone claiming
its id): the newest serves it, and when it goes, the newest of those still open
serves again - a connection that leaves never orphans one that stays (issue 17:
after an impostor left, the real switch stayed unserved although connected).
"""

from __future__ import annotations

from typing import Any

from controller.cluster.roles import Roles
from controller.datapath.messages import OFMessage
from controller.openflow.codec import translate
from controller.trust.identity import Identity


class Switches:
    def __init__(self, roles: Roles) -> None:
        self.roles = roles
        self._datapaths: dict[int, Any] = {}  # dpid -> os-ken Datapath serving it
        self._open: dict[int, list[Any]] = {}  # dpid -> its open connections, oldest first
        self._peers: dict[Any, Identity] = {}  # connection -> its certificate's holder

    def add(self, dp: Any, peer: Identity | None = None) -> None:
        """`dp` serves its datapath from now on (the older connections wait)."""
        self._open.setdefault(dp.id, []).append(dp)
        self._datapaths[dp.id] = dp
        if peer is not None:
            self._peers[dp] = peer

    def remove(self, dp: Any) -> bool:
        """Forget the closed connection `dp`; True if it was serving its datapath,
        which is then served by the newest connection still open, if any (`get`)."""
        dpid: int | None = dp.id
        conns = self._open.get(dpid) if dpid is not None else None
        if dpid is None or conns is None or dp not in conns:
            return False
        conns.remove(dp)
        self._peers.pop(dp, None)
        if self._datapaths.get(dpid) is not dp:
            return False
        live = [c for c in conns if getattr(c, "is_active", True)]
        if live:
            self._datapaths[dpid] = live[-1]
        else:
            del self._datapaths[dpid]
            del self._open[dpid]
        return True

    def get(self, dpid: int) -> Any | None:
        return self._datapaths.get(dpid)

    def serves(self, dp: Any) -> bool:
        """Whether `dp` is the connection serving its datapath (not a refused or a
        waiting one): only its messages are heard."""
        dpid: int | None = dp.id
        return dpid is not None and self._datapaths.get(dpid) is dp

    def all(self) -> list[Any]:
        return list(self._datapaths.values())

    def peers(self) -> list[tuple[Any, Identity]]:
        """Every open connection with a certificate, and its holder."""
        return list(self._peers.items())

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
