"""Controller replicas: leases (the leadership, memberships), this replica's roles
(master or slave of each switch), the masters' assignment and exports between
replicas. Imports store, desired and datapath.
"""
