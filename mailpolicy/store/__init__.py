"""The store: SQL schema, migrations and the Directory implementation (SQLite or PostgreSQL).

Layer. May import: config, core. Imported by the daemon, the admin service and
the tests; other services see it only as a `core.directory.Directory`.
"""

from mailpolicy.store.errors import Conflict, Invalid, NotFound, StoreError
from mailpolicy.store.store import Store

__all__ = ["Conflict", "Invalid", "NotFound", "Store", "StoreError"]
