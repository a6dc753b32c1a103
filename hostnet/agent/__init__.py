"""The host agent: configuration, registration, the route stream from the controller,
its commands, the local API and the Docker plugin service, wired in agent.py.
Imports hostnet.host, hostnet.docker, controller.agents.messages and
controller.desired.models; nothing imports it but hostnet.main (and, for the
controller client, hostnet.host.attach and hostnet.docker).
"""
