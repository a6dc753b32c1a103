"""Store URLs: open_store() picks the backend, parse_etcd_url() reads an etcd URL, and a
malformed URL is one line naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store.etcd.store import EtcdStore, parse_etcd_url
from controller.store.sqlite import SqliteStore
from controller.store.url import DEFAULT_STORE_URL, open_store


def test_open_store_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "o.db"
    s = open_store(f"sqlite:///{path}")
    assert isinstance(s, SqliteStore)
    s.put("k", "v", {"ok": True})
    s.close()
    assert path.exists()


def test_open_store_memory() -> None:
    s = open_store("sqlite:///:memory:")
    s.put("k", "v", {"ok": True})
    assert s.get("k", "v") == {"ok": True}
    with s.exclusive():
        assert s.snapshot()[1] == {"k": [{"ok": True}]}
    s.close()


def test_default_url_is_absolute_sqlite() -> None:
    assert DEFAULT_STORE_URL == "sqlite:////var/lib/daolinet/daolinet.db"


@pytest.mark.parametrize(
    ("url", "members", "prefix"),
    [
        ("etcd://127.0.0.1:2379", [("127.0.0.1", 2379)], "daolinet"),
        ("etcd://127.0.0.1:2379/", [("127.0.0.1", 2379)], "daolinet"),
        (
            "etcd://127.0.0.1:2379,127.0.0.1:22379/daolinet-test-1",
            [("127.0.0.1", 2379), ("127.0.0.1", 22379)],
            "daolinet-test-1",
        ),
        ("etcd://etcd-1.lab:2379,[::1]:2379/d_1.x", [("etcd-1.lab", 2379), ("::1", 2379)], "d_1.x"),
    ],
)
def test_parse_etcd_url(url: str, members: list[tuple[str, int]], prefix: str) -> None:
    assert parse_etcd_url(url) == (members, prefix)
    s = open_store(url)  # opening does not connect
    assert isinstance(s, EtcdStore)
    assert s.keys.prefix == prefix
    s.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgres://x/y", "unsupported store URL 'postgres://x/y': expected sqlite:"),
        ("/var/lib/daolinet/x.db", "unsupported store URL"),
        ("", "unsupported store URL"),
        ("sqlite://host/x.db", "malformed store URL"),
        ("sqlite:relative.db", "malformed store URL"),
        ("sqlite:///relative.db", "absolute file path"),
        ("sqlite:///", "absolute file path"),
        ("sqlite:////", "absolute file path"),
        ("etcd:127.0.0.1:2379", r"malformed store URL .*: expected etcd://HOST:PORT\[,HOST:PORT"),
        ("etcd://", "names no etcd member"),
        ("etcd:///daolinet", "names no etcd member"),
        ("etcd://127.0.0.1", "'127.0.0.1' is not HOST:PORT"),
        ("etcd://127.0.0.1:", "is not HOST:PORT"),
        ("etcd://127.0.0.1:2379,", "'' is not HOST:PORT"),
        ("etcd://127.0.0.1:99999", "port 99999 of '127.0.0.1:99999' is not in 1-65535"),
        ("etcd://127.0.0.1:0", "port 0"),
        ("etcd://a b:2379", "is not HOST:PORT"),
        ("etcd://h:1,h:1", "lists 'h:1' twice"),
        ("etcd://h:1/a/b", "the prefix 'a/b' must be one word"),
        ("etcd://h:1/x?y=1", "the prefix 'x\\?y=1' must be one word"),
    ],
)
def test_open_store_rejects(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        open_store(url)
    assert "\n" not in str(err.value)
