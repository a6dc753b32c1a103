"""The desired state: records (models), the inventory that changes them (validation,
topology, policy_changes, behind the `inventory.Inventory` facade) in step with the
store (sync, replication), the index the core reads, change events, policy decisions and
the errors a refused change raises. Imports the store interface and nothing above it.
"""
