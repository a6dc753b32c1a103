"""Persistence of the desired state: the interface (base), SQLite (sqlite), etcd (etcd/,
split by mechanism) and the URL that picks one (url).  Imports nothing of daolinet
outside controller.store."""
