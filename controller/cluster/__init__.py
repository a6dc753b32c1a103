"""Controller replicas: leases, memberships, the masters' assignment and exports between
replicas. Imports store, desired and datapath.
"""
