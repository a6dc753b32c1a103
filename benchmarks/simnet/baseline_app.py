"""The baseline of benchmarks/scale.py: the least an os-ken 4 app can do per PacketIn.

One FlowMod (in_port and the IPv4 pair, read by slicing the frame) and one
PacketOut of the packet to the other port: the ceiling of the framework on this
machine, with the same simulated switches as daolinet.  Loaded by os-ken's
AppManager (benchmarks/simnet/procs.py, `Baseline`).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

# Its flows expire like daolinet's (procs.IDLE_ENV, set by the benchmark).
IDLE_TIMEOUT = int(os.environ.get("DAOLINET_SCALE_IDLE_TIMEOUT", "10"))


class Baseline13(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]  # noqa: RUF012 - os-ken reads it as is

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)  # type: ignore[untyped-decorator]
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        data = msg.data
        match = parser.OFPMatch(in_port=in_port, eth_type=0x0800,
                                ipv4_src=socket.inet_ntoa(data[26:30]),
                                ipv4_dst=socket.inet_ntoa(data[30:34]))
        actions = [parser.OFPActionOutput(1 if in_port != 1 else 2)]
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(parser.OFPFlowMod(dp, priority=100, match=match, instructions=inst,
                                      idle_timeout=IDLE_TIMEOUT))
        dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                                        actions=actions, data=data))
