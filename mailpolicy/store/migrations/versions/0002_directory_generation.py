"""The directory generation: one row moved by every directory write, for the lookup caches of
other processes (before, they watched the SQLite files, which every claim and audit line
changes too)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    from mailpolicy.store.schema import directory_generation

    bind = op.get_bind()
    if not sa.inspect(bind).has_table("directory_generation"):  # 0001 makes today's tables
        directory_generation.create(bind)
    if bind.scalar(sa.select(sa.func.count()).select_from(directory_generation)) == 0:
        bind.execute(directory_generation.insert().values(id=1, generation=0))


def downgrade() -> None:
    op.drop_table("directory_generation")
