"""domains.postmaster: where postmaster@ and abuse@ of the domain go (RFC 5321 4.5.1, RFC
2142) when no mailbox or alias of that name exists. Existing domains get their first mailbox."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("domains")}
    if "postmaster" not in columns:  # 0001 makes today's tables
        op.add_column("domains", sa.Column("postmaster", sa.String(254), nullable=False,
                                           server_default=""))
    bind.execute(sa.text(
        "UPDATE domains SET postmaster = (SELECT m.name || '@' || domains.name FROM mailboxes m"
        " WHERE m.domain_id = domains.id ORDER BY m.created_at, m.id LIMIT 1)"
        " WHERE postmaster = '' AND EXISTS (SELECT 1 FROM mailboxes m"
        " WHERE m.domain_id = domains.id)"))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("postmaster")
