"""Dovecot's SQL passdb/userdb on a PostgreSQL store; on a node of a cluster the passdb also
answers `proxy=y host=… port=…` for mailboxes at home on another node (Dovecot's proxy mode),
so a client may log in on any node. SQL NULL columns are not returned as fields, so a CASE
without ELSE adds the proxy fields only where they apply."""

from __future__ import annotations

import sqlalchemy as sa

from mailpolicy.config import Config

POSTGRESQL_PREFIXES = ("postgresql", "postgres")


def is_postgresql(cfg: Config) -> bool:
    return cfg.store_url.startswith(POSTGRESQL_PREFIXES)


def _value(text: str) -> str:
    if any(c in text for c in "\n\r\0 '\\"):
        raise ValueError(f"store.url: not usable in Dovecot's connect string: {text!r}")
    return text


def connect(cfg: Config) -> str:
    """Dovecot's pgsql `connect` string (libpq key=value) from store.url."""
    url = sa.engine.make_url(cfg.store_url)
    parts = [("host", url.host), ("port", url.port), ("dbname", url.database),
             ("user", url.username), ("password", url.password)]
    return " ".join(f"{k}={_value(str(v))}" for k, v in parts if v not in (None, ""))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_FROM = ("FROM mailboxes m JOIN domains d ON d.id = m.domain_id \\\n"
         "  WHERE m.name = '%n' AND d.name = '%d' AND m.enabled")


def _proxy_fields(cfg: Config) -> tuple[str, str]:
    """(the proxy columns of a password_query, its extra JOIN): none outside a cluster."""
    node = cfg.cluster.node
    if not node:
        return "", ""
    elsewhere = f"m.home_node NOT IN ('', {_literal(node)})"
    return (f", \\\n  CASE WHEN {elsewhere} THEN 'y' END AS proxy, \\\n"
            f"  CASE WHEN {elsewhere} THEN n.imap_host END AS host, \\\n"
            f"  CASE WHEN {elsewhere} THEN CASE WHEN '%s' = 'pop3' THEN n.pop3_port \\\n"
            f"       ELSE n.imap_port END END AS port",
            " \\\n  LEFT JOIN nodes n ON n.name = m.home_node")


def sql_conf(cfg: Config) -> str:
    """dovecot-sql.conf.ext for PostgreSQL (Debian package dovecot-pgsql)."""
    root = _literal(str(cfg.maildir_root) + "/")
    proxy, join = _proxy_fields(cfg)
    node = cfg.cluster.node
    here = f" AND m.home_node IN ('', {_literal(node)})" if node else ""
    cluster_note = (f"""
# Node {node} of a cluster: a mailbox at home on another node is proxied there (proxy, host,
# port: that node's Dovecot; the home node checks the password again). Columns that are NULL
# are not fields, so the CASEs without ELSE add nothing for mailboxes at home here.""" if node
                    else "")
    return f"""\
# Dovecot SQL passdb/userdb on mailpolicy's PostgreSQL store (generated from mailpolicy's config).
# Needs the dovecot-pgsql package. Read-only: mailpolicy alone writes these tables.
# The connect string holds the store's password, if any: keep this file root:dovecot 0640.
driver = pgsql
connect = {connect(cfg)}

default_pass_scheme = ARGON2ID
{cluster_note}
password_query = SELECT m.name || '@' || d.name AS "user", m.password_hash AS password{proxy} \\
  FROM mailboxes m JOIN domains d ON d.id = m.domain_id{join} \\
  WHERE m.name = '%n' AND d.name = '%d' AND m.enabled AND m.password_hash <> ''

user_query = SELECT {root} || d.name || '/' || m.name AS home, \\
  CASE WHEN m.max_size IS NULL THEN '*:storage=0' \\
       ELSE '*:bytes=' || m.max_size END AS quota_rule \\
  {_FROM}

# For `doveadm ... -A`: the mailboxes whose Maildirs are on this node.
iterate_query = SELECT m.name || '@' || d.name AS "user" \\
  FROM mailboxes m JOIN domains d ON d.id = m.domain_id WHERE m.enabled{here}
"""


def token_sql_conf(cfg: Config) -> str:
    """The log-in-as token passdb for PostgreSQL (proxied like the password passdb); IMAP
    only, like the SQLite variant: never an SMTP AUTH (Postfix's SASL) or POP3 password."""
    proxy, join = _proxy_fields(cfg)
    return f"""\
# Dovecot SQL passdb for mailpolicy's "log in as the mail user" tokens on PostgreSQL
# (generated from mailpolicy's config); see the SQLite variant for what it does.
# IMAP only ('%s' is the service asking): never an SMTP AUTH (Postfix asks as "smtp") or POP3
# password, so a token cannot send mail as the user.
driver = pgsql
connect = {connect(cfg)}

password_query = SELECT m.name || '@' || d.name AS "user", \\
  '{{SHA256.HEX}}' || t.token_hash AS password{proxy} \\
  FROM tokens t JOIN mailboxes m ON m.id = t.mailbox_id \\
  JOIN domains d ON d.id = m.domain_id{join} \\
  WHERE m.name = '%n' AND d.name = '%d' AND m.enabled AND NOT t.used \\
    AND '%s' = 'imap' \\
    AND t.expires_at > extract(epoch from now()) \\
  ORDER BY t.created_at DESC LIMIT 1
"""


def doveadm_conf(cfg: Config, user: str, group: str) -> str:
    """The doveadm server `mailpolicy mailbox move` copies through (`doveadm backup`), on the
    port and with the password every node shares; "" when moves are not configured."""
    c = cfg.cluster
    if not c.doveadm_port:
        return ""
    if any(ch in c.doveadm_password for ch in "\n\r\0\""):
        raise ValueError("cluster.doveadm_password: not usable in a Dovecot config")
    return f"""
# `mailpolicy mailbox move`: the other nodes' doveadm copies mailboxes here (doveadm backup).
# The password is a secret shared by the nodes: keep this file root:dovecot 0640.
# (No doveadm_port: with it doveadm asks the passdb whether a user is proxied first.)
service doveadm {{
  inet_listener {{
    port = {c.doveadm_port}
  }}
}}
doveadm_password = "{c.doveadm_password}"
# mailpolicy runs `doveadm backup` as the mail user ({user}); Dovecot restricts user lookups
# on its default 0666 socket to the caller's own uid, which the userdb does not return.
service auth {{
  unix_listener auth-userdb {{
    mode = 0660
    user = {user}
    group = {group}
  }}
}}
# At the switch of a move mailpolicy runs `doveadm kick USER` (as {user}, the owner of the
# IMAP/POP3 processes it ends): doveadm finds the user's sessions through anvil.
service anvil {{
  unix_listener anvil {{
    mode = 0600
    user = {user}
  }}
}}
"""
