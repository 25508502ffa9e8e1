"""The store: SQL schema, migrations and the Directory implementation (SQLite or PostgreSQL)."""

from .errors import Conflict, Invalid, NotFound, StoreError
from .store import Store

__all__ = ["Conflict", "Invalid", "NotFound", "Store", "StoreError"]
