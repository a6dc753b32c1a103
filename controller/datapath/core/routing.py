"""Route derivation: which kernel routes each host needs, from the flows the core
holds, the sites, relays and tunnels of the hosts, and what other replicas'
switches need (their exports).

Kernel routes are derived, never stored separately: a host must hold
`B/32 via host(B)` exactly while one of its flows (live or waiting to be
installed) sends B's traffic to the LOCAL port (docs/architecture.md, "Sites").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from controller.datapath import paths, sites
from controller.datapath.core.context import Part
from controller.datapath.messages import OFPP_LOCAL
from controller.datapath.needs import Needs
from controller.datapath.state import Switch
from controller.desired.models import Endpoint, Host, KernelRoute

IPv4 = ipaddress.IPv4Address


class Routing(Part):
    """Reads the state and the pinned desired state; writes nothing but the
    forgetting of imports from switches that are gone."""

    def next_hop(self, src: str, dst: Host) -> IPv4:
        """Where host `src` routes `dst`'s containers: across sites, its tunnel address."""
        h = self.desired.host(src)
        return paths.next_hop(h, dst) if h is not None else dst.address

    def kernel_route(self, dst: IPv4, via: IPv4) -> KernelRoute:
        """A `wg` route when `via` is a tunnel address, else a plain `via` route."""
        if self.desired.host_by_tunnel(via) is not None:
            return KernelRoute(kind="wg", dst=dst, via=via)
        return KernelRoute(kind="via", dst=dst, via=via)

    def route_need(self, host: str, out_port: int, dst: Endpoint) -> tuple[IPv4, IPv4] | None:
        """The (dst, via) route a flow of `host` to `out_port` needs, if any."""
        if out_port != OFPP_LOCAL or dst.host == host:
            return None
        dst_host = self.desired.host(dst.host)
        return (dst.ip, self.next_hop(host, dst_host)) if dst_host else None

    def relay_of(self, src: str, via: IPv4) -> str | None:
        """The relay host between `src` and the host of tunnel address `via`, if any."""
        h, dst = self.desired.host(src), self.desired.host_by_tunnel(via)
        if h is None or dst is None:
            return None
        relay = paths.host_path(h, dst, self.desired.hosts).relay
        return relay.name if relay is not None else None

    def relays_of(self, host: str) -> set[str]:
        """Relays that may carry connections of `host` (it is behind NAT)."""
        h = self.desired.host(host)
        if h is None or h.wg_endpoint is not None or h.tunnel_address is None:
            return set()
        hosts = self.desired.hosts()
        return {
            r.name for x in hosts if (r := sites.relay_for(h, x, hosts)) is not None
        } - {host}

    def path(self, a: str, b: str) -> str:
        """"underlay" inside a site, "wireguard" across sites, "relay:R" through R."""
        ha, hb = self.desired.host(a), self.desired.host(b)
        if ha is None or hb is None:
            return "underlay"
        return paths.host_path(ha, hb, self.desired.hosts).label

    # what a host needs -----------------------------------------------------------------
    def needed(self, host: str) -> dict[IPv4, IPv4]:
        """Every route (dst -> via) `host` must hold now."""
        sw = self.state.switch_of(host)
        if sw is None:
            return dict(self.state.host_routes(host).announced)  # keep until we know better
        mine = list(self.state.switches.values())
        return (
            self.imported(host)
            | {dst: via for dst, via in sw.route_needs}
            | self.relay_needs(host, mine)
            | self.receive_needs(host, mine)
        )

    def exported(self, host: str, switches: Iterable[Switch]) -> dict[int, dict[IPv4, IPv4]]:
        """What each of `switches` needs on `host` (served by another replica)."""
        return {sw.dpid: self.relay_needs(host, [sw]) | self.receive_needs(host, [sw])
                for sw in switches}

    def imported(self, host: str) -> Needs:
        """What other replicas' switches need on `host` (their exports)."""
        table = self.state.imports.get(host)
        if table is None:
            return {}
        ours = {d for d, sw in self.state.switches.items() if sw.synced}
        gone = {d for d in table.sets if self.desired.host_by_dpid(d) is None}
        table.forget(gone)
        return table.union(ours)

    def relay_needs(self, host: str, switches: Iterable[Switch]) -> dict[IPv4, IPv4]:
        """The `wg` routes relay `host` holds for the NATed pairs it carries: both
        ends' container addresses, through their hosts' tunnel addresses (for the
        flows of `switches`)."""
        me = self.desired.host(host)
        if me is None or not me.relay:
            return {}
        out: dict[IPv4, IPv4] = {}
        for sw in switches:
            src = self.desired.host(sw.host)
            if sw.host == host or src is None or src.tunnel_address is None:
                continue
            for r in sw.flows.values():
                if r.needs_route and self.relay_of(sw.host, r.needs_route[1]) == host:
                    out[r.needs_route[0]] = r.needs_route[1]
                    # The sender's end too, through its own tunnel address: WireGuard
                    # on the relay drops what arrives from a peer unless its source is
                    # in that peer's allowed-ips.  The flow the other way, which would
                    # also ask for it, lives on another switch (another replica's, with
                    # spread masters) and may expire first (one-way traffic).
                    out[r.src] = src.tunnel_address
        return out

    def receive_needs(self, host: str, switches: Iterable[Switch]) -> dict[IPv4, IPv4]:
        """Across sites, what `host` holds while another host still sends to it.

        WireGuard accepts a packet only if its source is in the sending peer's
        allowed-ips. So the receiving host keeps the sender's container address
        (route and allowed-ips) as long as the sender's flow lives, even when its own
        flows of the connection idled out (one-way traffic, a link outage during
        which nothing arrived). Otherwise the sender's retransmissions would be
        dropped by WireGuard and never reach a switch to set the connection up again.
        """
        me = self.desired.host(host)
        if me is None or (me.tunnel_address is None and host not in self.state.foreign):
            return {}  # no flow can be its receiver's (is_receiver): skip the scan
        out: dict[IPv4, IPv4] = {}
        for sender in (sw for sw in switches if sw.host != host):
            src_host = self.desired.host(sender.host)
            if src_host is None:
                continue
            hop = self.next_hop(host, src_host)
            for r in sender.flows.values():
                if r.needs_route and self.is_receiver(host, r.needs_route):
                    out[r.src] = hop
        return out

    def is_receiver(self, host: str, need: tuple[IPv4, IPv4]) -> bool:
        """Whether a flow needing `need` (dst, next hop) sends to `host` across sites,
        or to a host another replica masters.

        Inside a site too, the receiving host's kernel needs a route back to the
        sender for what it answers itself before its switch sees the connection
        (`traceroute`'s probe that expires there).  With one master of both
        switches the flow the other way brings that route at setup; a host another
        replica masters gets it exported, and the setup waits for it as across
        sites (the probe follows the first packet at once).
        """
        dst = self.desired.endpoint_by_ip(need[0])
        if dst is None or dst.host != host:
            return False
        return self.desired.host_by_tunnel(need[1]) is not None or host in self.state.foreign

    def partners_of(self, host: str) -> set[str]:
        """Hosts whose needs follow `host`'s flows: its relays and receivers."""
        return self.relays_of(host) | self.receivers_of(host)

    def receivers_of(self, host: str) -> set[str]:
        """Hosts whose receive needs depend on `host`'s flows, now or before."""
        me = self.desired.host(host)
        if me is None or (me.tunnel_address is None and not self.state.foreign):
            return set()  # no receive needs anywhere for its flows: skip the scans
        hosts: set[str] = set()
        sw = self.state.switch_of(host)
        for r in sw.flows.values() if sw else ():
            if r.needs_route:
                dst = self.desired.endpoint_by_ip(r.needs_route[0])
                if dst is not None and self.is_receiver(dst.host, r.needs_route):
                    hosts.add(dst.host)
        held = [(o, set(r.announced)) for o, r in self.state.routes.items()]
        held += [(o, {d for n in (e.sent or {}).values() for d in n})
                 for o, e in self.state.exports.items()]
        for other, dsts in held:
            if other == host:
                continue
            for d in dsts:
                ep = self.desired.endpoint_by_ip(d)
                if ep is not None and ep.host == host:
                    hosts.add(other)
        return hosts - {host}


def local_route(ep: Endpoint) -> KernelRoute:
    """The route of a container on its own host: to its veth, by its MAC."""
    return KernelRoute(kind="local", dst=ep.ip, lladdr=ep.mac)
