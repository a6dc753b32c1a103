"""Everything the agent changes on its host: netlink, kernel routes, NAT, OVS, WireGuard,
container ports (ports.py: the plumbing attach and the Docker plugin share), run in a
worker thread (worker.py).  Imports controller.desired, controller.datapath.sites,
controller.agents.messages and hostnet.agent.client (the controller client attach uses).
"""
