"""The layout of the store's keys in etcd, under one prefix word (default "daolinet"):

    PREFIX/docs/KIND/KEY   a document: JSON, sorted keys, compact (dump_document)
    PREFIX/lock            exclusive(): the lock, attached to the store's session lease
    PREFIX/leader          try_lead(): the leader's value, attached to its own lease
    PREFIX/member/NAME     try_lead(key="member/NAME"): a replica's membership, the same way

The watch covers `PREFIX/docs/` only, so it reports documents and nothing else.
"""

from __future__ import annotations

import re

from controller.store.base import check_lead_key

DEFAULT_PREFIX = "daolinet"
PREFIX_WORD = re.compile(r"^[A-Za-z0-9._-]+$")


class Keyspace:
    """The keys of one store prefix, as UTF-8 bytes."""

    def __init__(self, prefix: str) -> None:
        if not PREFIX_WORD.match(prefix):
            raise ValueError(f"etcd store prefix {prefix!r} must be one word")
        self.prefix = prefix
        self.docs = f"{prefix}/docs/".encode()
        self.lock = f"{prefix}/lock".encode()
        self.members = f"{prefix}/member/".encode()

    def doc(self, kind: str, key: str) -> bytes:
        if not kind or "/" in kind:
            raise ValueError(f"document kind {kind!r} must be a non-empty word without '/'")
        return self.docs + f"{kind}/{key}".encode()

    def split_doc(self, raw: bytes) -> tuple[str, str]:
        """(kind, key) of a document's key."""
        kind, _, key = raw[len(self.docs) :].decode().partition("/")
        return kind, key

    def lead(self, key: str) -> bytes:
        """The key of a leadership ("leader" or "member/NAME"); ValueError else."""
        return f"{self.prefix}/{check_lead_key(key)}".encode()

    def member_name(self, raw: bytes) -> str:
        """NAME of a membership's key."""
        return raw[len(self.members) :].decode()
