"""An integration testbed: N daolinet "hosts" on one machine.

Layout (names start with ``dlt<id>``, ``<id>`` = 4 random hex digits per testbed)::

    root netns                      host netns dlt<id>hN                container netns
    dlt<id>ul (Linux bridge)        eth0 198.18.X.(10+N)/24             dlt<id>c<name>
      198.18.X.1/24  ──veth── dlt<id>hNu   ovsdb-server, ovs-vswitchd       eth0 (from the agent)
      daolinet-controller              daolinet-hostnet agent (br-dl, netdev)

* The underlay is a Linux bridge in the root namespace; every host is a network
  namespace joined to it by a veth and runs its own ``ovsdb-server`` and
  ``ovs-vswitchd`` (userspace datapath ``netdev``), each with its own db file and
  run directory, plus the real ``daolinet-hostnet agent``.
* The controller runs in the root namespace and listens on 198.18.X.1.
* Containers are network namespaces attached through ``daolinet-hostnet attach``.

Everything created is recorded in a registry file (``/run/dlt-testbed/<id>.json``)
before it is created, so :func:`cleanup_leftovers` can remove what a crashed run left
behind without touching a testbed that another live process is using.

Only the 198.18.0.0/15 benchmark range (RFC 2544) is used for the underlay, and all
traffic stays inside the namespaces and veths of the testbed.

Sites (``Testbed(sites={...}, wireguard=True)``): every site has its own underlay
segment (site of the first host: ``dlt<id>ul``, 198.18.X.0/24; others ``dlt<id>u<i>``,
198.18.Y.0/24), joined by a router namespace ``dlt<id>r`` (198.18.Y.254 on each,
forwarding, ICMP dropped).  A site in ``nat_sites`` sits behind its own NAT router
``dlt<id>n<i>`` (nftables masquerade, reached by the core router over a /30 of
198.18.T.0/24; nothing routes to the inside).  Every host has a WireGuard interface
``dlt<id>w<N>`` (wireguard-go), tunnel address 198.19.X.(10+N)/24, provisioned with
``daolinet-hostnet wg-up`` before the agents start.  The controller runs in the
namespace of the first host and listens on every address; hosts of other sites reach
it at that host's tunnel address.

The parts, one module each, lowest first: `procs` (running commands, tracked
processes, what the machine needs), `registry` (what exists, leftovers, ids and
subnets), `layout` (names and addresses), `hosts` (a host's namespace and OVS, reading
its flows and routes), `sites` (underlay bridges, routers, NAT, WireGuard),
`controllers` (controller replicas, the API), `agents` (agents, containers), `traffic`
(ping, nc, traceroute, iperf3), `testbed` (the `Testbed` facade that wires them),
`docker` (a dockerd per host), `tcpproxy` (a TCP proxy a test can cut).

This package re-exports the names the tests and benchmarks use (the one package
allowed to, being a test harness): ``from testbed import Testbed`` beside the tests,
``from tests.integration.testbed import Testbed`` from the repository root.
"""

from .hosts import (
    BRIDGE,
    COOKIE_CONNECTION,
    COOKIE_DENY,
    GATEWAY_MAC,
    PRIO_CONNECTION,
    PRIO_MISS,
    Container,
    Flow,
    Host,
)
from .procs import BIN_DIR, Proc, TestbedError, skip_reason, tail, wait_until
from .registry import cleanup_leftovers, netns_list, netns_pids, root_links
from .testbed import Testbed
from .traffic import Pinger, parse_traceroute

__all__ = [
    "BIN_DIR",
    "BRIDGE",
    "COOKIE_CONNECTION",
    "COOKIE_DENY",
    "GATEWAY_MAC",
    "PRIO_CONNECTION",
    "PRIO_MISS",
    "Container",
    "Flow",
    "Host",
    "Pinger",
    "Proc",
    "Testbed",
    "TestbedError",
    "cleanup_leftovers",
    "netns_list",
    "netns_pids",
    "parse_traceroute",
    "root_links",
    "skip_reason",
    "tail",
    "wait_until",
]
