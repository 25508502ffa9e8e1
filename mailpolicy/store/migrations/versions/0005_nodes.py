"""Nodes of a cluster, each mailbox's home node and the bytes it stores (for RCPT-time quota
checks on the other nodes)."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    from mailpolicy.store.schema import nodes

    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if not inspector.has_table("nodes"):  # 0001 makes today's tables
        nodes.create(bind)
    have = {c["name"] for c in inspector.get_columns("mailboxes")}
    with op.batch_alter_table("mailboxes") as batch:
        if "home_node" not in have:
            batch.add_column(sa.Column("home_node", sa.String(63), nullable=False,
                                       server_default=""))
        if "used_bytes" not in have:
            batch.add_column(sa.Column("used_bytes", sa.BigInteger, nullable=False,
                                       server_default="0"))
        if "moving_to" not in have:
            batch.add_column(sa.Column("moving_to", sa.String(63), nullable=False,
                                       server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("moving_to")
        batch.drop_column("used_bytes")
        batch.drop_column("home_node")
    op.drop_table("nodes")
