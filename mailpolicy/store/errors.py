"""Store errors: each maps to one admin API status."""

from __future__ import annotations


class StoreError(Exception):
    """Base of all store errors."""

    code = "error"
    status = 400

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(StoreError):
    """A value is not acceptable; `field` names it."""

    code = "invalid"
    status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field)


class NotFound(StoreError):
    code = "not_found"
    status = 404


class Conflict(StoreError):
    code = "conflict"
    status = 409
