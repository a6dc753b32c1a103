"""daolinet host agent: bridge, container attachment, kernel routes, Docker plugin."""
