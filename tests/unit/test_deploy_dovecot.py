"""dovecotconf: the Dovecot fragment and SQL queries, checked against the real schema and doveconf.

Regenerate config/dovecot/ after changing mailpolicy/dovecotconf.py:
    .venv/bin/python tests/unit/test_deploy_dovecot.py --write
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from golden import write_on_request

from mailpolicy import config
from mailpolicy.deploy import dovecot as dovecotconf

REPO = Path(__file__).resolve().parents[2]
# The deployment layout the README describes (and systemd/mailpolicy.service allows to write).
DEPLOY = {"paths": {"state_dir": "/var/lib/mailpolicy", "maildir_root": "/var/vmail",
                    "admin_socket": "/run/mailpolicy/admin.sock"}}


def expected() -> dict[Path, str]:
    files = dovecotconf.render(config.from_dict(DEPLOY))
    return {REPO / "config/dovecot" / name: text for name, text in files.items()}


def sql_settings(text: str) -> dict[str, str]:
    """key = value settings of a dovecot-sql.conf.ext (backslash continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = {}
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_example_files_equal_render_of_the_deployment_config() -> None:
    for path, text in expected().items():
        assert path.read_text() == text, (
            f"{path.relative_to(REPO)} drifted from dovecotconf; regenerate with "
            "`.venv/bin/python tests/unit/test_deploy_dovecot.py --write`")


def test_fragment_points_at_our_maildirs_store_and_quota() -> None:
    cfg = config.from_dict(DEPLOY)
    conf = dovecotconf.dovecot_conf(cfg)
    assert "mail_location = maildir:/var/vmail/%d/%n/Maildir:LAYOUT=maildir++" in conf
    assert f"args = {dovecotconf.DEFAULT_SQL_CONF}" in conf
    assert conf.count("driver = sql") == 3  # passdb, token passdb and userdb
    # the token passdb comes after the password passdb, with its own args file beside it
    tokens = f"args = /etc/dovecot/{dovecotconf.TOKEN_SQL_CONF_NAME}"
    assert conf.index(f"args = {dovecotconf.DEFAULT_SQL_CONF}") < conf.index(tokens)
    assert "quota = maildir:User quota" in conf
    assert "mail_uid = mailpolicy" in conf
    sql = sql_settings(dovecotconf.sql_conf(cfg))
    assert sql["driver"] == "sqlite"
    assert sql["connect"] == "/var/lib/mailpolicy/mailpolicy.db"


def test_only_sqlite_and_postgresql_stores_are_supported() -> None:
    cfg = config.from_dict({"store": {"url": "mysql+aiomysql://db/mail"}})
    with pytest.raises(ValueError, match=r"store\.url"):
        dovecotconf.sql_conf(cfg)
    cfg = config.from_dict({"store": {"url": "postgresql+asyncpg://mp:pw@db:5433/mail"}})
    sql = sql_settings(dovecotconf.sql_conf(cfg))
    assert sql["driver"] == "pgsql"
    assert sql["connect"] == "host=db port=5433 dbname=mail user=mp password=pw"
    assert "proxy" not in sql["password_query"]  # one node: nothing to proxy


def test_postgresql_variant_has_the_sasl_listener_and_imap_only_tokens() -> None:
    """`dovecot-config` on a PostgreSQL store (a cluster node): the same conf.d fragment with
    Postfix's SASL auth listener, and the token passdb answers IMAP logins only."""
    cfg = config.from_dict({"store": {"url": "postgresql+asyncpg://mp:pw@db/mail"},
                            "cluster": {"node": "n1"}})
    files = dovecotconf.render(cfg)
    assert "unix_listener /var/spool/postfix/private/auth" in files[dovecotconf.CONF_NAME]
    tokens = sql_settings(files[dovecotconf.TOKEN_SQL_CONF_NAME])
    assert tokens["driver"] == "pgsql"
    assert "'%s' = 'imap'" in tokens["password_query"]
    assert "proxy" in tokens["password_query"]  # proxied like the password passdb
    assert "'%s' = 'imap'" not in sql_settings(files[dovecotconf.SQL_CONF_NAME])[
        "password_query"]


async def _provision(cfg: config.Config) -> None:
    from mailpolicy.store import Store

    store = await Store.open(cfg.store_url)
    try:
        await store.create_domain("example.test")
        await store.create_mailbox("alice@example.test", password="pw-alice-1",
                                   max_size=5 * 1024**2)
        await store.create_mailbox("bob@example.test", password="pw-bob-12")
        await store.create_mailbox("off@example.test", password="pw-off-12", enabled=False)
    finally:
        await store.close()


def _run(query: str, db: Path, user: str, service: str = "imap") -> list[sqlite3.Row]:
    local, _, domain = user.partition("@")
    q = query.replace("%n", local.replace("'", "''")).replace("%d", domain.replace("'", "''"))
    q = q.replace("%s", service)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(q).fetchall()


def test_queries_run_on_the_real_schema(tmp_path: Path) -> None:
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path), "maildir_root": "/m'x"}})
    asyncio.run(_provision(cfg))
    db = dovecotconf.sqlite_path(cfg)
    sql = sql_settings(dovecotconf.sql_conf(cfg))
    rows = _run(sql["password_query"], db, "alice@example.test")
    assert len(rows) == 1 and rows[0]["user"] == "alice@example.test"
    assert rows[0]["password"].startswith("{ARGON2ID}$argon2id$")
    assert _run(sql["password_query"], db, "off@example.test") == []  # disabled
    assert _run(sql["password_query"], db, "nobody@example.test") == []
    user = _run(sql["user_query"], db, "alice@example.test")[0]
    assert user["home"] == "/m'x/example.test/alice"  # quoted safely in SQL
    assert user["quota_rule"] == f"*:bytes={5 * 1024**2}"
    assert _run(sql["user_query"], db, "bob@example.test")[0]["quota_rule"] == "*:storage=0"
    with sqlite3.connect(db) as conn:
        users = {r[0] for r in conn.execute(sql["iterate_query"])}
    assert users == {"alice@example.test", "bob@example.test"}


async def _tokens(cfg: config.Config) -> dict[str, str]:
    from mailpolicy.store import Store

    store = await Store.open(cfg.store_url)
    try:
        return {
            "old": await store.tokens.create("alice@example.test", ttl=60),
            "alice": await store.tokens.create("alice@example.test", ttl=60),
            "expired": await store.tokens.create("bob@example.test", ttl=-1),
            "off": await store.tokens.create("off@example.test", ttl=60),
        }
    finally:
        await store.close()


def test_token_query_answers_the_newest_live_token(tmp_path: Path) -> None:
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)}})
    asyncio.run(_provision(cfg))
    toks = asyncio.run(_tokens(cfg))
    db = dovecotconf.sqlite_path(cfg)
    query = sql_settings(dovecotconf.token_sql_conf(cfg))["password_query"]
    # no other Dovecot variables than name, domain and service
    assert "%" not in query.replace("%n", "").replace("%d", "").replace("%s", "")
    rows = _run(query, db, "alice@example.test")
    for service in ("smtp", "pop3", "lmtp"):  # login-as tokens are IMAP passwords only
        assert _run(query, db, "alice@example.test", service) == []
    assert len(rows) == 1 and rows[0]["user"] == "alice@example.test"
    digest = hashlib.sha256(toks["alice"].encode()).hexdigest()
    assert rows[0]["password"] == "{SHA256.HEX}" + digest
    assert _run(query, db, "bob@example.test") == []  # expired
    assert _run(query, db, "off@example.test") == []  # disabled mailbox
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tokens SET used = 1")
    assert _run(query, db, "alice@example.test") == []  # redeemed through the admin API


@pytest.mark.skipif(not os.access("/usr/bin/doveadm", os.X_OK), reason="needs Dovecot")
def test_dovecot_verifies_a_token_against_its_stored_hash() -> None:
    token = "Xy_-09" * 7
    stored = "{SHA256.HEX}" + hashlib.sha256(token.encode()).hexdigest()
    res = subprocess.run(["/usr/bin/doveadm", "pw", "-t", stored, "-p", token],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "verified" in res.stdout, res.stderr


@pytest.mark.skipif(not os.access("/usr/bin/doveconf", os.X_OK),
                    reason="needs Dovecot: apt-get install dovecot-core dovecot-sqlite")
def test_doveconf_accepts_the_fragment(tmp_path: Path) -> None:
    cfg = config.from_dict(DEPLOY)
    sql = tmp_path / dovecotconf.SQL_CONF_NAME
    files = dovecotconf.render(cfg, sql_conf_path=str(sql),
                               owner=dovecotconf.DovecotUser("nobody", "nogroup", 100))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    conf = tmp_path / "dovecot.conf"
    conf.write_text(f"base_dir = {tmp_path}/run\nprotocols = imap\nssl = no\n"
                    + files[dovecotconf.CONF_NAME])
    res = subprocess.run(["/usr/bin/doveconf", "-c", str(conf), "-n"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "mail_location = maildir:/var/vmail/%d/%n/Maildir:LAYOUT=maildir++" in res.stdout


if __name__ == "__main__":
    write_on_request(expected, REPO)
