"""`mailpolicy mailbox login-as` as a real process against a real admin server: the IMAP login,
the token (stored hashed, audited, redeemable once through the API), --ttl, --json, refusals."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator

import pytest
from test_admin_support import CLI, ENV, AdminEnv, admin_server, run

from mailpolicy.deploy.dovecot import sqlite_path


@pytest.fixture
async def env() -> AsyncIterator[AdminEnv]:
    async with admin_server() as e:
        await e.store.create_domain("example.com")
        await e.store.create_mailbox("joe@example.com", password="joe's password")
        yield e


async def cli(env: AdminEnv, *args: str) -> tuple[int, str, str]:
    return await run([*CLI, "--socket", env.socket, *args], env=ENV)


def _pairs(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}


def _stored(env: AdminEnv, token: str) -> sqlite3.Row:
    with sqlite3.connect(sqlite_path(env.cfg)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM tokens WHERE token_hash = ?",
                           (hashlib.sha256(token.encode()).hexdigest(),)).fetchone()
    assert row is not None
    return row


async def test_login_as_prints_the_imap_login_and_a_short_lived_token(env: AdminEnv) -> None:
    before = dt.datetime.now(dt.UTC)
    rc, out, err = await cli(env, "mailbox", "login-as", "Joe@Example.com")
    assert rc == 0, err
    shown = _pairs(out)
    assert shown["IMAP login"] == "joe@example.com"
    token = shown["Password"]
    expires = dt.datetime.fromisoformat(out.split("Expires:", 1)[1].split()[0])
    assert 290 <= (expires - before).total_seconds() <= 310  # the 300 s default
    row = _stored(env, token)
    assert row["expires_at"] - row["created_at"] == pytest.approx(300)
    assert not row["used"] and row["actor"] == "root"
    audit = (await env.store.list_audit(limit=1))[0]
    assert (audit["action"], audit["target"], audit["actor"]) == (
        "mailbox.login_as", "joe@example.com", "root")
    # the API's redeem stays single-use
    assert (await env.ok("POST", "/v1/login-as", {"token": token})) == {
        "address": "joe@example.com"}
    status, _ = await env.call("POST", "/v1/login-as", {"token": token})
    assert status == 403


async def test_login_as_ttl_and_json(env: AdminEnv) -> None:
    rc, out, err = await cli(env, "mailbox", "login-as", "joe@example.com", "--ttl", "60",
                             "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert set(res) == {"address", "token", "expires_at"} and res["address"] == "joe@example.com"
    row = _stored(env, res["token"])
    assert row["expires_at"] - row["created_at"] == pytest.approx(60)
    audit = (await env.store.list_audit(limit=1))[0]
    assert audit["action"] == "mailbox.login_as" and json.loads(audit["detail"]) == {"ttl": 60}


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["nobody@example.com"], 1, "no such mailbox"),
    (["joe@example.com", "--ttl", "0"], 1, "ttl"),
    (["joe@example.com", "--ttl", "86400"], 1, "ttl"),
    (["joe@example.com", "--ttl", "soon"], 2, "usage:"),
    ([], 2, "usage:"),
])
async def test_login_as_refusals(env: AdminEnv, args: list[str], code: int, needle: str) -> None:
    rc, _, err = await cli(env, "mailbox", "login-as", *args)
    assert rc == code and needle in err, err
    with sqlite3.connect(sqlite_path(env.cfg)) as conn:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone()[0] == 0
