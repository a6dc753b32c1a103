"""The agent stream hub: one live, acknowledged session per host agent, and what the
stream carries besides routes (names.py: the names tables). Imports datapath and desired.
"""
