"""The agent stream hub: one live, acknowledged session per host agent. Imports datapath
and desired.
"""
