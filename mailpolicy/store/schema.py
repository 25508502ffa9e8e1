"""The SQL schema (SQLAlchemy Core), portable between SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

domains = sa.Table(
    "domains", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(253), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False, server_default=""),
    sa.Column("outbound_ip", sa.String(45), nullable=False, server_default=""),
    sa.Column("default_action", sa.String(16), nullable=False, server_default="reject"),
    sa.Column("redirect_to", sa.String(254), nullable=False, server_default=""),
    sa.Column("dmarc", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("dmarc_policy", sa.String(16), nullable=False, server_default="none"),
    sa.Column("dmarc_rua", sa.String(254), nullable=False, server_default=""),
    sa.Column("dmarc_adkim", sa.String(1), nullable=False, server_default="r"),
    sa.Column("dmarc_aspf", sa.String(1), nullable=False, server_default="r"),
    sa.Column("tls_cert", sa.String(4096), nullable=False, server_default=""),
    sa.Column("tls_key", sa.String(4096), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("postmaster", sa.String(254), nullable=False, server_default=""),
)

mailboxes = sa.Table(
    "mailboxes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(512), nullable=False, server_default=""),
    sa.Column("max_size", sa.BigInteger, nullable=True),
    sa.Column("no_save", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.Float, nullable=False),
    # the node its Maildir lives on ("" = the one implicit node) and the bytes stored there,
    # which the home node keeps current for the other nodes' RCPT-time quota checks
    sa.Column("home_node", sa.String(63), nullable=False, server_default=""),
    sa.Column("used_bytes", sa.BigInteger, nullable=False, server_default="0"),
    # set while `mailbox move` switches its home: deliveries are deferred (4xx) meanwhile
    sa.Column("moving_to", sa.String(63), nullable=False, server_default=""),
    sa.UniqueConstraint("domain_id", "name", name="uq_mailbox_name"),
)

aliases = sa.Table(
    "aliases", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.UniqueConstraint("domain_id", "name", name="uq_alias_name"),
)

copies = sa.Table(
    "copies", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("address", sa.String(254), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
)

autoresponders = sa.Table(
    "autoresponders", metadata,
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("from_addr", sa.String(512), nullable=False, server_default=""),
    sa.Column("subject", sa.String(998), nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("start_date", sa.Date, nullable=True),
    sa.Column("end_date", sa.Date, nullable=True),
    sa.Column("interval_days", sa.Integer, nullable=True),
    sa.Column("attachment_name", sa.String(255), nullable=True),
    sa.Column("attachment_type", sa.String(255), nullable=True),
    sa.Column("attachment_data", sa.LargeBinary, nullable=True),
)

autoreply_log = sa.Table(
    "autoreply_log", metadata,
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("sender", sa.String(254), primary_key=True),
    sa.Column("response_key", sa.String(64), primary_key=True),
    sa.Column("sent_at", sa.Float, nullable=False),
)

ip_pool = sa.Table(
    "ip_pool", metadata,
    sa.Column("address", sa.String(45), primary_key=True),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("mailboxes.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, server_default=sa.false()),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(320), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
)

nodes = sa.Table(
    "nodes", metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("lmtp", sa.String(261), nullable=False),  # host:port of its LMTP server
    sa.Column("imap_host", sa.String(253), nullable=False, server_default=""),
    sa.Column("imap_port", sa.Integer, nullable=False, server_default="143"),
    sa.Column("pop3_port", sa.Integer, nullable=False, server_default="110"),
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# One row: moved by every committed directory write (not by autoreply claims, tokens or audit
# lines), so that other processes' lookup caches know when to start afresh.
directory_generation = sa.Table(
    "directory_generation", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
)
