"""The os-ken app (app.py), the codec between the core's message values and os-ken
objects (codec.py), and the registry of connected switches the runtime writes to
(switches.py). The only package that imports os-ken; imports datapath and cluster
(the roles).
"""
