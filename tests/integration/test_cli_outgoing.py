"""The CLI verbs of the sending half: sender grants and send limits on mailboxes, DKIM keys and
their rotation, dovecot-config."""

from __future__ import annotations

import json

from test_admin_support import AdminEnv, cli, cli_env, cli_ok

env_fixture = cli_env  # provides the `env` fixture (an admin server)

ok = cli_ok


async def test_may_send_as_and_limits(env: AdminEnv) -> None:
    await ok(env, "domain", "add", "example.com")
    m = json.loads(await ok(env, "mailbox", "add", "ann@example.com", "--may-send-as",
                            "team@example.com @example.org", "--messages-per-hour", "5",
                            "--json"))
    assert m["sending"]["may_send_as"] == ["team@example.com", "@example.org"]
    assert m["sending"]["messages_per_hour"] == 5
    assert m["sending"]["effective"] == {"messages_per_hour": 5, "recipients_per_hour": 1000}
    m = json.loads(await ok(env, "mailbox", "edit", "ann@example.com", "--may-send-as",
                            "news@example.com", "--messages-per-hour", "default", "--json"))
    assert m["sending"]["may_send_as"] == ["team@example.com", "@example.org",
                                           "news@example.com"]
    assert m["sending"]["messages_per_hour"] is None
    out = await ok(env, "mailbox", "edit", "ann@example.com", "--clear-may-send-as")
    assert "May send as:" in out and "200 messages, 1000 recipients per hour" in out
    rc, _out, err = await cli(env, "mailbox", "edit", "ann@example.com", "--may-send-as",
                              "not an address")
    assert rc == 1 and "--may-send-as" in err
    rc, _out, err = await cli(env, "mailbox", "edit", "ann@example.com",
                              "--recipients-per-hour", "lots")
    assert rc == 1 and "--recipients-per-hour" in err
    # a bad sending option on add changes nothing: the mailbox is not created either
    rc, _out, err = await cli(env, "mailbox", "add", "bo@example.com", "--may-send-as", "x+y@z")
    assert rc == 1 and "--may-send-as" in err
    rc, _out, _err = await cli(env, "mailbox", "show", "bo@example.com")
    assert rc == 1


async def test_dkim_keys_and_rotation(env: AdminEnv) -> None:
    await ok(env, "domain", "add", "example.com")
    keys = json.loads(await ok(env, "domain", "dkim", "example.com", "--json"))["keys"]
    assert len(keys) == 1 and keys[0]["signing"] and keys[0]["record"].startswith(
        "v=DKIM1; k=rsa; p=")
    rotated = json.loads(await ok(env, "domain", "dkim-rotate", "example.com", "--json"))
    assert [(k["signing"], k["published"]) for k in rotated["keys"]] == [(True, True),
                                                                         (False, True)]
    assert rotated["keys"][0]["retire_at"] is not None
    zone = await ok(env, "dns-records", "example.com", "--zone")
    for k in rotated["keys"]:  # both selectors stay published while the new one waits
        assert f"{k['selector']}._domainkey.example.com.\tIN\tTXT" in zone
    table = await ok(env, "domain", "dkim", "example.com")
    assert "signing" in table and "published" in table


async def test_dovecot_config_prints_the_files(env: AdminEnv) -> None:
    out = json.loads(await ok(env, "dovecot-config", "--json"))
    assert set(out) == {"90-mailpolicy.conf", "dovecot-sql-mailpolicy.conf.ext",
                        "dovecot-sql-mailpolicy-tokens.conf.ext"}
    assert "unix_listener /var/spool/postfix/private/auth" in out["90-mailpolicy.conf"]
    assert "'%s' = 'imap'" in out["dovecot-sql-mailpolicy-tokens.conf.ext"]
    text = await ok(env, "dovecot-config", "--sql-conf-dir", "/etc/dovecot/mp")
    assert "# ==== /etc/dovecot/mp/dovecot-sql-mailpolicy.conf.ext ====" in text
    assert "args = /etc/dovecot/mp/dovecot-sql-mailpolicy.conf.ext" in text


async def test_sending_api_refuses_bad_input_and_changes_nothing(env: AdminEnv) -> None:
    await env.ok("POST", "/v1/domains", {"name": "example.com"})
    await env.ok("POST", "/v1/mailboxes", {"address": "ann@example.com"})
    url = "/v1/mailboxes/ann@example.com/sending"
    before = await env.ok("GET", url)
    for body in ({"may_send_as": ["a@example.com"], "messages_per_hour": -1},
                 {"may_send_as": ["not an address"]}, {"recipients_per_hour": "many"},
                 {"unknown": 1}):
        status, _res = await env.call("PATCH", url, body)
        assert status in (400, 422), body
    assert await env.ok("GET", url) == before
    got = await env.ok("PATCH", url, {"may_send_as": ["@Example.ORG"], "recipients_per_hour": 0})
    assert got["may_send_as"] == ["@example.org"] and got["effective"]["recipients_per_hour"] == 0
