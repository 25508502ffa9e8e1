"""Tables of the sending half: sender grants, send limits and their counters, DKIM keys."""

from __future__ import annotations

import sqlalchemy as sa

from mailpolicy.store.schema import metadata

# A mailbox may use these sender addresses besides its own and its aliases':
# `user@domain` (also with +ext) or `@domain` (any address of the domain: catch-all senders).
send_grants = sa.Table(
    "send_grants", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("address", sa.String(254), nullable=False, index=True),
    sa.UniqueConstraint("mailbox_id", "address", name="uq_send_grant"),
)

# A mailbox's own send limits per hour (NULL = the configured default; 0 = no limit).
send_limits = sa.Table(
    "send_limits", metadata,
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("messages_per_hour", sa.Integer, nullable=True),
    sa.Column("recipients_per_hour", sa.Integer, nullable=True),
)

# Messages and recipients sent per key (`mailbox:<login>`, `domain:<name>`) and hour
# (Unix time // 3600), counted with atomic upserts so every worker and host shares them.
send_counters = sa.Table(
    "send_counters", metadata,
    sa.Column("key", sa.String(330), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True),
    sa.Column("messages", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("recipients", sa.BigInteger, nullable=False, server_default="0"),
)

# DKIM keys: the private key is a 0600 file under the state dir (key_file), the public one here.
dkim_keys = sa.Table(
    "dkim_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("selector", sa.String(63), nullable=False),
    sa.Column("algorithm", sa.String(8), nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("key_file", sa.String(4096), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("active_from", sa.Float, nullable=False),  # signs from then on
    sa.Column("retire_at", sa.Float, nullable=True),  # unpublished and unused from then on
    sa.UniqueConstraint("domain_id", "selector", name="uq_dkim_selector"),
)

TABLES = (send_grants, send_limits, send_counters, dkim_keys)
