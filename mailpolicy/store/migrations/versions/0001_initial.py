"""First schema version: domains, mailboxes, aliases, copies, autoresponders, IP pool, tokens,
audit log. Later versions change the schema with explicit operations."""

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    from mailpolicy.store.schema import metadata

    metadata.create_all(op.get_bind())


def downgrade() -> None:
    from mailpolicy.store.schema import metadata

    metadata.drop_all(op.get_bind())
