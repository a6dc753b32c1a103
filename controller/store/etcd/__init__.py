"""The etcd backend of the store, split by mechanism: the gateway client and failover
between members (client), the key layout (keys), leases (lease), the lock and fenced
writes (lock), leader election and memberships (election), the watch (watch), and the
backend that composes them (store).  Imports nothing of daolinet but controller.store.base."""
