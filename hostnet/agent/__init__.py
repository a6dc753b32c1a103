"""The host agent: registration, the route stream from the controller and the local API."""
