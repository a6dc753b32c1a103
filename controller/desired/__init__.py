"""The desired state: records, their validation, the index the core reads, change events
and policy decisions. Imports the store interface and nothing above it.
"""
