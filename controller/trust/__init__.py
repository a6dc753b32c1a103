"""Trust: who a caller is and which channels carry it (docs/security.md).

`identity` reads a caller's identity (role, name, serial) from the peer certificate
the TLS layer verified; `tls` builds the SSL contexts of the API server and of its
clients (agents, replicas, daolictl) and picks up renewed certificate files without
a restart; `revocation` is the set of revoked certificate serials, kept in the store
and shared by the replicas.

Imports nothing of daolinet but `controller.store.base` (the store protocol the
revocations are kept in): the API, the agents' client and the replicas import it.
"""
