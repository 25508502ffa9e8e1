"""Pure generator of the Dovecot fragment: Maildirs, SQL passdb/userdb on our store, quota."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailpolicy.config import Config
from mailpolicy.deploy import dovecot_pgsql
from mailpolicy.deploy.tlsmaps import DOVECOT_MAP

SQL_CONF_NAME = "dovecot-sql-mailpolicy.conf.ext"
TOKEN_SQL_CONF_NAME = "dovecot-sql-mailpolicy-tokens.conf.ext"
CONF_NAME = "90-mailpolicy.conf"
DEFAULT_SQL_CONF = f"/etc/dovecot/{SQL_CONF_NAME}"
SQLITE_PREFIXES = ("sqlite+aiosqlite:///", "sqlite+pysqlite:///", "sqlite:///")


@dataclass(frozen=True, slots=True)
class DovecotUser:
    """Who Dovecot's mail and auth-worker processes run as: the owner of the Maildirs and
    of the store file (mailpolicy's own user in a deployment, root in the tests)."""

    user: str = "mailpolicy"
    group: str = "mailpolicy"
    first_valid_uid: int = 100  # Debian's system users start at 100


def sqlite_path(cfg: Config) -> Path:
    """The SQLite file behind cfg.store_url (Dovecot's sqlite driver reads it directly)."""
    url = cfg.store_url
    for prefix in SQLITE_PREFIXES:
        if url.startswith(prefix):
            return Path(url[len(prefix):].split("?", 1)[0])
    raise ValueError(f"store.url: Dovecot's SQL config is generated for SQLite and PostgreSQL "
                     f"only, got {url!r}")


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _dovecot_value(text: str) -> str:
    if any(c in text for c in "\n\r\0"):
        raise ValueError(f"not usable in a Dovecot config: {text!r}")
    return text


_FROM = ("FROM mailboxes m JOIN domains d ON d.id = m.domain_id \\\n"
         "  WHERE m.name = '%n' AND d.name = '%d' AND m.enabled = 1")


def sql_conf(cfg: Config) -> str:
    """dovecot-sql.conf.ext: passdb and userdb queries on mailpolicy's tables."""
    if dovecot_pgsql.is_postgresql(cfg):
        return dovecot_pgsql.sql_conf(cfg)
    db = _dovecot_value(str(sqlite_path(cfg)))
    root = _dovecot_value(str(cfg.maildir_root))
    return f"""\
# Dovecot SQL passdb/userdb on mailpolicy's store (generated from mailpolicy's config).
# Needs the dovecot-sqlite package. Read-only: mailpolicy alone writes these tables.
driver = sqlite
connect = {db}

# password_hash already carries its scheme ({{ARGON2ID}}..., {{BLF-CRYPT}}..., {{SHA512-CRYPT}}...);
# this is only the fallback for a hash without a prefix.
default_pass_scheme = ARGON2ID

# A mailbox logs in with its full address; a disabled mailbox or one without a password cannot.
password_query = SELECT m.name || '@' || d.name AS user, m.password_hash AS password \\
  {_FROM} AND m.password_hash <> ''

# home = {{root}}/{{domain}}/{{name}}; the Maildir is home/Maildir (mail_location).
# quota_rule from mailboxes.max_size in bytes (NULL = unlimited): the same number mailpolicy's
# LMTP server and policy service enforce, counted the Maildir++ way (maildirsize).
user_query = SELECT {_sql_literal(root + "/")} || d.name || '/' || m.name AS home, \\
  CASE WHEN m.max_size IS NULL THEN '*:storage=0' \\
       ELSE '*:bytes=' || m.max_size END AS quota_rule \\
  {_FROM}

# For `doveadm ... -A`.
iterate_query = SELECT m.name || '@' || d.name AS user \\
  FROM mailboxes m JOIN domains d ON d.id = m.domain_id WHERE m.enabled = 1
"""


def token_sql_conf(cfg: Config) -> str:
    """The second passdb's SQL: an admin's "log in as" token (`mailpolicy mailbox login-as`)
    is accepted as the mailbox's password while it is unused and unexpired."""
    if dovecot_pgsql.is_postgresql(cfg):
        return dovecot_pgsql.token_sql_conf(cfg)
    db = _dovecot_value(str(sqlite_path(cfg)))
    return f"""\
# Dovecot SQL passdb for mailpolicy's "log in as the mail user" tokens (generated from
# mailpolicy's config). Tried after the password passdb: a typed password that does not match
# the mailbox's own is checked against the newest unused, unexpired token of the mailbox.
# The store keeps only the token's SHA-256 in hex, which is Dovecot's {{SHA256.HEX}} scheme.
# Limit: Dovecot only reads this table, so over IMAP a token works until it expires (5 minutes
# by default), not once; redeeming it through the admin API (POST /v1/login-as) is single-use
# and also ends its use here.
# IMAP only ('%s' is the service asking): never an SMTP AUTH (Postfix asks as "smtp") or POP3
# password, so a token cannot send mail as the user.
driver = sqlite
connect = {db}

# expires_at is Unix seconds; julianday() gives now without a %-variable Dovecot would expand.
password_query = SELECT m.name || '@' || d.name AS user, \\
  '{{SHA256.HEX}}' || t.token_hash AS password \\
  FROM tokens t JOIN mailboxes m ON m.id = t.mailbox_id JOIN domains d ON d.id = m.domain_id \\
  WHERE m.name = '%n' AND d.name = '%d' AND m.enabled = 1 AND t.used = 0 \\
    AND '%s' = 'imap' \\
    AND t.expires_at > (julianday('now') - 2440587.5) * 86400.0 \\
  ORDER BY t.created_at DESC LIMIT 1
"""


def token_sql_conf_path(sql_conf_path: str) -> str:
    """The token passdb's args file: beside the main SQL config."""
    return str(Path(sql_conf_path).with_name(TOKEN_SQL_CONF_NAME))


def auth_socket_path(cfg: Config) -> str:
    """Where Postfix's smtpd finds Dovecot SASL: `private/auth` under its queue directory."""
    return str(Path(cfg.submission.postfix_queue_directory) / "private" / "auth")


def _auth_listener(cfg: Config) -> str:
    if not cfg.submission.enabled:
        return ""
    path = _dovecot_value(auth_socket_path(cfg))
    return f"""\
# SMTP AUTH for Postfix's submission services (smtpd_sasl_type = dovecot,
# smtpd_sasl_path = private/auth, relative to Postfix's queue directory).
auth_mechanisms = plain login
service auth {{
  unix_listener {path} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


def dovecot_conf(cfg: Config, *, sql_conf_path: str = DEFAULT_SQL_CONF,
                 owner: DovecotUser = DovecotUser()) -> str:
    """The conf.d fragment (e.g. /etc/dovecot/conf.d/90-mailpolicy.conf)."""
    root = _dovecot_value(str(cfg.maildir_root))
    tokens_path = _dovecot_value(token_sql_conf_path(sql_conf_path))
    return f"""\
# Dovecot reads the Maildirs mailpolicy's LMTP server writes and authenticates mailboxes
# against mailpolicy's store (generated from mailpolicy's config).
# Maildir++ layout: INBOX in Maildir/, folders as Maildir/.Name (e.g. .Junk).
mail_location = maildir:{root}/%d/%n/Maildir:LAYOUT=maildir++

# Maildirs belong to the user mailpolicy runs as.
mail_uid = {owner.user}
mail_gid = {owner.group}
first_valid_uid = {owner.first_valid_uid}
first_valid_gid = {owner.first_valid_uid}

# Log in with the full address, case-insensitively (mailpolicy stores lowercase names).
auth_username_format = %Lu

passdb {{
  driver = sql
  args = {sql_conf_path}
}}
# "Log in as the mail user": an admin's token (`mailpolicy mailbox login-as ADDRESS`) as the
# password. Dovecot tries passdbs in order and goes on after a mismatch (result_failure =
# continue is the default). Over IMAP the token works until it expires: Dovecot cannot mark
# it used (the admin API's POST /v1/login-as is the single-use redeem).
passdb {{
  driver = sql
  args = {tokens_path}
}}
userdb {{
  driver = sql
  args = {sql_conf_path}
}}

{_auth_listener(cfg)}
# The auth worker opens the SQLite file (and its -wal/-shm files): run it as their owner.
service auth-worker {{
  user = {owner.user}
}}

# Maildir++ quota: Dovecot and mailpolicy both keep Maildir/maildirsize and count the same
# bytes (the ,S=<size> in the file names). The limit comes from the userdb (quota_rule).
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = maildir:User quota
}}

# Per-domain certificates by SNI (local_name blocks), kept by mailpolicy from its domains;
# `doveadm reload` after a certificate change.
!include_try {_dovecot_value(str(cfg.state_dir / DOVECOT_MAP))}
""" + dovecot_pgsql.doveadm_conf(cfg, owner.user, owner.group)


def render(cfg: Config, *, sql_conf_path: str = DEFAULT_SQL_CONF,
           owner: DovecotUser = DovecotUser()) -> dict[str, str]:
    """The files by name: {CONF_NAME: the conf.d fragment, SQL_CONF_NAME: the SQL queries,
    TOKEN_SQL_CONF_NAME: the log-in-as token query (installed beside SQL_CONF_NAME)}."""
    return {
        CONF_NAME: dovecot_conf(cfg, sql_conf_path=sql_conf_path, owner=owner),
        SQL_CONF_NAME: sql_conf(cfg),
        TOKEN_SQL_CONF_NAME: token_sql_conf(cfg),
    }
