"""The errors of the desired state, in one module: what the API maps to responses
(controller/api/errors.py) and what a corrupt store document raises."""

from __future__ import annotations


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

    A RuntimeError: at start it stops the controller (a corrupt store is loud); a
    replica's store watch logs it and goes on (controller/desired/sync.py).
    """
