"""The directory change log (SQLite): triggers add a row naming the domain or mailbox behind
every insert, update and delete of domains, mailboxes, aliases and copies, so an in-memory
directory (store/snapshot.py) reads only what changed. It keeps about the last 50,000 rows."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

KEEP = 50_000  # rows kept; pruned every 1,000 inserts (a reader further behind rebuilds)

# (table, change kind, the column naming what changed)
_SOURCES = (("domains", "d", "id"), ("mailboxes", "m", "id"), ("aliases", "m", "mailbox_id"),
            ("copies", "m", "mailbox_id"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return  # PostgreSQL: the caches follow the TTL (see core/cache.py)
    op.execute("CREATE TABLE IF NOT EXISTS directory_changes ("
               "id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, ref INTEGER NOT NULL)")
    for table, kind, column in _SOURCES:
        for event, rows in (("INSERT", ("NEW",)), ("DELETE", ("OLD",)),
                            ("UPDATE", ("OLD", "NEW"))):
            values = ", ".join(f"('{kind}', {r}.{column})" for r in rows)
            op.execute(f"CREATE TRIGGER IF NOT EXISTS directory_changes_{table}_{event.lower()}"
                       f" AFTER {event} ON {table} BEGIN"
                       f" INSERT INTO directory_changes (kind, ref) VALUES {values}; END")
    op.execute("CREATE TRIGGER IF NOT EXISTS directory_changes_prune AFTER INSERT ON"
               " directory_changes WHEN NEW.id % 1000 = 0 BEGIN"
               f" DELETE FROM directory_changes WHERE id <= NEW.id - {KEEP}; END")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    names = [f"directory_changes_{t}_{e}" for t, _, _ in _SOURCES
             for e in ("insert", "delete", "update")] + ["directory_changes_prune"]
    for name in names:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(sa.text("DROP TABLE IF EXISTS directory_changes"))
