"""Store URLs: `open_store()` opens the backend a URL names (the controller's `--store`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.store.base import Store
from controller.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from controller.store.etcd.client import EtcdTLS

DEFAULT_STORE_URL = "sqlite:////var/lib/daolinet/daolinet.db"


def open_store(url: str, etcd_tls: EtcdTLS | None = None) -> Store:
    """Open the store named by a URL.

    * SQLite: `sqlite:///` followed by an absolute path, so
      `sqlite:////var/lib/daolinet/daolinet.db` (four slashes), or `sqlite:///:memory:`
      for a throw-away store.
    * etcd: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (default prefix "daolinet"),
      e.g. `etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/daolinet`.  Opening
      does not connect: the first request does.  With `etcd_tls` (the controller's
      --etcd-tls-* files) the members are reached over https with a client certificate;
      the URL stays the same.
    """
    prefix = "sqlite:///"
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "etcd":
        # Imported here: the etcd client (etcd3gw, futurist, eventlet) takes a while to
        # import, and a SQLite store does not need it.
        from controller.store.etcd.store import EtcdStore

        return EtcdStore.from_url(url, tls=etcd_tls)
    if scheme != "sqlite":
        raise ValueError(
            f"unsupported store URL {url!r}: expected sqlite:////absolute/path.db"
            " or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"
        )
    if not url.startswith(prefix):
        raise ValueError(f"malformed store URL {url!r}: expected sqlite:////absolute/path.db")
    path = url[len(prefix) :]
    if path == ":memory:":
        return SqliteStore(path)
    if not path.startswith("/") or path.rstrip("/") == "":
        raise ValueError(
            f"store URL {url!r} needs an absolute file path: sqlite:////absolute/path.db"
        )
    return SqliteStore(path)
