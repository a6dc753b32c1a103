"""Persistence of the desired state: the interface, SQLite and etcd. Imports nothing of daolinet."""
