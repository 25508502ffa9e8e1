"""The sending half: sender grants, send limits and counters, DKIM keys."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    from mailpolicy.store.schema_outgoing import TABLES

    bind = op.get_bind()
    for table in TABLES:
        if not sa.inspect(bind).has_table(table.name):  # 0001 may have made it already
            table.create(bind)


def downgrade() -> None:
    from mailpolicy.store.schema_outgoing import TABLES

    for table in reversed(TABLES):
        op.drop_table(table.name)
