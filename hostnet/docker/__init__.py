"""Docker's remote network and IPAM drivers served by the agent: the Docker Engine
client (engine.py), IPAM, the network driver, published ports (publish.py),
reconciliation, container moves, put together in plugin.py.  Imports hostnet.host,
hostnet.agent.client and the rules of addresses (controller.desired.addresses).
"""
