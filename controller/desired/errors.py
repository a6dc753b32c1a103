"""The errors of the desired state, in one module: what the API maps to responses
(controller/api/errors.py) and what a corrupt store document raises."""

from __future__ import annotations

from controller.store.base import StoreError


class InventoryError(Exception):
    """A refused change; the message names the offending field and value."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(InventoryError):
    status_code = 404


class Conflict(InventoryError):
    status_code = 409


class Invalid(InventoryError):
    status_code = 422


class CorruptDocument(RuntimeError):
    """A document of a known kind that does not decode; the message names it.

    A replica's store watch logs it and goes on (controller/desired/sync.py); at start
    the record is set aside instead (controller/desired/replication.py).
    """


class StoreSchemaTooNew(StoreError):
    """The store's schema version is newer than this controller's (or unreadable): it
    would misread the records, so it refuses to start (controller/desired/replication.py)."""
