"""The pure core: events in, OpenFlow message values and route requests out, and the
runtime that carries them out. Imports nothing of api, cluster, store, openflow or os-
ken.
"""
