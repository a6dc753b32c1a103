"""The restart policies of this host's Docker containers, kept on disk.

At a host's boot dockerd restarts the containers that have a restart policy while its
API does not answer yet, and the IPAM request of each says nothing of the container
(ipam.py): the plugin gives such a request an address held for one of those
containers first, not one of a container that stays stopped.  The policy is read
from the Docker API when the container joins (driver.py) and kept here, since the
API is not there to ask at the moment it matters.  A file, not the controller: it is
this host's Docker engine's business, and the agent needs it before the controller
may be reachable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "restart-policies.json"
# Docker's restart policies under which dockerd starts a container at its own start.
RESTARTS_AT_BOOT = frozenset({"always", "unless-stopped", "on-failure"})


class RestartPolicies:
    """Docker id -> restart policy name; written through to `state_dir` (None: in
    memory only).  A file that cannot be read starts empty (one warning)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / FILE_NAME if state_dir is not None else None
        self._policies: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
                if not isinstance(loaded, dict):
                    raise ValueError("not an object")
                self._policies = {str(k): str(v) for k, v in loaded.items()}
            except (OSError, ValueError) as exc:
                log.warning("%s not read (%s): restart policies start empty", self.path, exc)

    def restarts_at_boot(self, docker_id: str) -> bool:
        return self._policies.get(docker_id) in RESTARTS_AT_BOOT

    def record(self, docker_id: str, policy: str) -> None:
        if self._policies.get(docker_id) != policy:
            self._policies[docker_id] = policy
            self._save()

    def keep_only(self, docker_ids: set[str]) -> None:
        """Forget the containers not in `docker_ids` (gone from this host)."""
        gone = set(self._policies) - docker_ids
        if gone:
            for docker_id in gone:
                del self._policies[docker_id]
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._policies, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("%s not written: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.with_suffix(".tmp").unlink()
