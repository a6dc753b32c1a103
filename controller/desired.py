"""In-memory index of the desired state, read by the core on every PacketIn.

The inventory persists records in the store and mirrors them here; the core only
reads.  Lookups on the hot path (endpoint by IP, endpoint by port) are dict hits.
A lock makes each call atomic because os-ken threads read while API handlers write.
"""

from __future__ import annotations

import ipaddress
import threading

from controller.models import Endpoint, Host, Network


class DesiredIndex:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._hosts: dict[str, Host] = {}
        self._hosts_by_dpid: dict[int, Host] = {}
        self._hosts_by_address: dict[ipaddress.IPv4Address, Host] = {}
        self._networks: dict[str, Network] = {}
        self._endpoints: dict[str, Endpoint] = {}  # by id
        self._by_name: dict[str, Endpoint] = {}
        self._by_ip: dict[ipaddress.IPv4Address, Endpoint] = {}
        self._by_port: dict[tuple[str, str], Endpoint] = {}

    # --- writes (inventory only) -------------------------------------------------
    def put_host(self, host: Host) -> None:
        with self._lock:
            old = self._hosts.get(host.name)
            if old is not None:
                self._hosts_by_dpid.pop(old.dpid, None)
                self._hosts_by_address.pop(old.address, None)
            self._hosts[host.name] = host
            self._hosts_by_dpid[host.dpid] = host
            self._hosts_by_address[host.address] = host

    def drop_host(self, name: str) -> None:
        with self._lock:
            old = self._hosts.pop(name, None)
            if old is not None:
                self._hosts_by_dpid.pop(old.dpid, None)
                self._hosts_by_address.pop(old.address, None)

    def put_network(self, network: Network) -> None:
        with self._lock:
            self._networks[network.name] = network

    def drop_network(self, name: str) -> None:
        with self._lock:
            self._networks.pop(name, None)

    def put_endpoint(self, endpoint: Endpoint) -> None:
        with self._lock:
            self.drop_endpoint(endpoint.id)
            self._endpoints[endpoint.id] = endpoint
            self._by_name[endpoint.name] = endpoint
            self._by_ip[endpoint.ip] = endpoint
            self._by_port[(endpoint.host, endpoint.port)] = endpoint

    def drop_endpoint(self, endpoint_id: str) -> None:
        with self._lock:
            old = self._endpoints.pop(endpoint_id, None)
            if old is not None:
                self._by_name.pop(old.name, None)
                self._by_ip.pop(old.ip, None)
                self._by_port.pop((old.host, old.port), None)

    # --- reads --------------------------------------------------------------------
    def host(self, name: str) -> Host | None:
        with self._lock:
            return self._hosts.get(name)

    def host_by_dpid(self, dpid: int) -> Host | None:
        with self._lock:
            return self._hosts_by_dpid.get(dpid)

    def host_by_address(self, address: ipaddress.IPv4Address) -> Host | None:
        with self._lock:
            return self._hosts_by_address.get(address)

    def hosts(self) -> list[Host]:
        with self._lock:
            return sorted(self._hosts.values(), key=lambda h: h.name)

    def network(self, name: str) -> Network | None:
        with self._lock:
            return self._networks.get(name)

    def networks(self) -> list[Network]:
        with self._lock:
            return sorted(self._networks.values(), key=lambda n: n.name)

    def endpoint(self, name_or_id: str) -> Endpoint | None:
        with self._lock:
            return self._endpoints.get(name_or_id) or self._by_name.get(name_or_id)

    def endpoint_by_ip(self, ip: ipaddress.IPv4Address) -> Endpoint | None:
        with self._lock:
            return self._by_ip.get(ip)

    def endpoint_by_port(self, host: str, port: str) -> Endpoint | None:
        with self._lock:
            return self._by_port.get((host, port))

    def endpoints(self, host: str | None = None, network: str | None = None) -> list[Endpoint]:
        with self._lock:
            found = [
                e
                for e in self._endpoints.values()
                if (host is None or e.host == host) and (network is None or e.network == network)
            ]
        return sorted(found, key=lambda e: e.name)
