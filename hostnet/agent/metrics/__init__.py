"""The agent's own metrics: the instruments the agent's parts count with
(instruments.py) and the server that exposes them (server.py; docs/operations.md,
"Metrics").  Imports prometheus_client, controller.trust.tls, the stream's message
kinds and the Docker plugin's outcomes; imported by the parts of hostnet.agent."""
