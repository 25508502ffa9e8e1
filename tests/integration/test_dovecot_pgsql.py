"""The Dovecot SQL queries for PostgreSQL run on a real store: on a node of a cluster the
passdb adds proxy/host/port only for mailboxes at home on another node."""

from __future__ import annotations

import asyncio
import re

from pgserver import PgServer, pg_module

from mailpolicy import config
from mailpolicy.deploy import dovecot as dovecotconf
from mailpolicy.store import Store

pg_fixture = pg_module  # provides the `pg` fixture (a private PostgreSQL)


def query(text: str, name: str, **variables: str) -> str:
    joined = re.sub(r"\\\n\s*", " ", text)
    line = next(ln for ln in joined.splitlines() if ln.startswith(f"{name} ="))
    q = line.partition("=")[2].strip()
    for var, value in variables.items():
        q = q.replace(f"%{var}", value)
    return q


async def test_password_query_proxies_mailboxes_at_home_elsewhere(pg: PgServer) -> None:
    url = await asyncio.to_thread(pg.createdb)
    store = await Store.open(url)
    try:
        await store.nodes.add("n1", lmtp="127.0.0.2:24", imap="127.0.0.2:1143")
        await store.nodes.add("n2", lmtp="127.0.0.3:24", imap="127.0.0.3:2143", pop3_port=2110)
        await store.create_domain("example.test")
        await store.create_mailbox("here@example.test", password="pw-here-1", node="n1")
        await store.create_mailbox("there@example.test", password="pw-there-1", node="n2")
        await store.tokens.create("there@example.test", actor="t", ttl=60)
        cfg = config.from_dict({"store": {"url": url}, "cluster": {"node": "n1"}})
        sql = dovecotconf.sql_conf(cfg)
        assert "driver = pgsql" in sql and f"port={pg.port}" in sql
        async with store.engine.connect() as conn:
            async def row(q: str) -> dict:
                r = (await conn.exec_driver_sql(q)).mappings().first()
                return {k: v for k, v in r.items() if v is not None} if r else {}

            here = await row(query(sql, "password_query", n="here", d="example.test", s="imap"))
            assert set(here) == {"user", "password"}  # NULL columns: no proxy fields
            there = await row(query(sql, "password_query", n="there", d="example.test",
                                    s="imap"))
            assert (there["proxy"], there["host"], there["port"]) == ("y", "127.0.0.3", 2143)
            pop = await row(query(sql, "password_query", n="there", d="example.test",
                                  s="pop3"))
            assert pop["port"] == 2110
            users = (await conn.exec_driver_sql(query(sql, "iterate_query"))).all()
            assert [u[0] for u in users] == ["here@example.test"]
            home = await row(query(sql, "user_query", n="here", d="example.test"))
            assert home["home"].endswith("/example.test/here")
            token = await row(query(dovecotconf.token_sql_conf(cfg), "password_query",
                                    n="there", d="example.test", s="imap"))
            assert token["password"].startswith("{SHA256.HEX}") and token["host"] == "127.0.0.3"
    finally:
        await store.close()
