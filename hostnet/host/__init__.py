"""Everything the agent changes on its host: netlink, kernel routes, NAT, OVS, WireGuard,
container ports.
"""
