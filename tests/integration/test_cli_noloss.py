"""Issue #13 over the CLI: provisioning that would lose mail is refused (exit 1, the reason
on stderr naming the field or the dependants, nothing changed); --force says what it also
changed; `domain show` says where postmaster@ and abuse@ go."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_admin_support import AdminEnv, admin_server
from test_cli_admin import cli, ok


@pytest.fixture
async def env() -> AsyncIterator[AdminEnv]:
    async with admin_server(admin={"min_password_length": 10}) as e:
        yield e


async def refused(env: AdminEnv, *args: str, stdin: bytes = b"") -> str:
    before = await env.snapshot()
    rc, out, err = await cli(env, *args, stdin=stdin)
    assert rc == 1 and out == "" and err.startswith("mailpolicy: "), (args, rc, out, err)
    assert await env.snapshot() == before
    return err


async def test_redirects_copies_and_passwords_that_lose_mail_are_refused(env) -> None:
    err = await refused(env, "domain", "add", "example.com", "--default-action", "redirect",
                        "--redirect-to", "postmaster@example.com")
    assert "redirect_to" in err and "postmaster@example.com" in err
    await ok(env, "domain", "add", "example.com")
    err = await refused(env, "domain", "add", "old.example", "--default-action",
                        "redirect-domain", "--redirect-to", "elsewhere.example")
    assert "redirect_to" in err and "not a domain hosted here" in err
    await ok(env, "domain", "add", "a.example", "--default-action", "redirect-domain",
             "--redirect-to", "example.com")
    err = await refused(env, "domain", "edit", "example.com", "--default-action",
                        "redirect-domain", "--redirect-to", "a.example")
    assert "redirect_to" in err and "loop" in err
    err = await refused(env, "mailbox", "add", "joe@example.com", "--copy-to", "ann")
    assert "copies_to" in err and "ann@example.com" in err
    err = await refused(env, "mailbox", "add", "joe@example.com", "--password-stdin",
                        stdin=b"pw\n")
    assert "password" in err and "shorter than 10" in err  # admin.min_password_length
    err = await refused(env, "mailbox", "add", "joe@example.com", "--password-stdin",
                        stdin=b"joe@example.com\n")
    assert "password" in err and "address" in err


async def test_delete_with_dependants_is_refused_and_force_clears_them(env) -> None:
    await ok(env, "domain", "add", "example.com")
    out = await ok(env, "domain", "show", "example.com")
    assert "nowhere (refused at RCPT)" in out  # no mailbox yet
    await ok(env, "mailbox", "add", "ann@example.com")
    await ok(env, "mailbox", "add", "bob@example.com")
    out = await ok(env, "domain", "show", "example.com")
    assert "postmaster@, abuse@:" in out and "ann@example.com" in out  # the first mailbox
    await ok(env, "domain", "add", "fwd.example", "--default-action", "redirect",
             "--redirect-to", "ann@example.com")
    await ok(env, "mailbox", "add", "away@example.com", "--copy-to", "ann", "--no-save")
    err = await refused(env, "mailbox", "delete", "ann@example.com", "--yes")
    assert "domain fwd.example redirects" in err and "mailbox away@example.com" in err
    assert "force" in err
    out = await ok(env, "mailbox", "delete", "ann@example.com", "--yes", "--force")
    assert "deleted ann@example.com" in out
    assert "domain fwd.example: default action set to reject" in out
    assert "mailbox away@example.com: copy removed, do-not-save turned off" in out
    assert "domain example.com: postmaster@ and abuse@ now go to bob@example.com" in out
    fwd = await env.store.get_domain("fwd.example")
    away = await env.store.get_mailbox("away@example.com")
    assert fwd is not None and fwd.default_action == "reject" and fwd.redirect_to == ""
    assert away is not None and away.copies_to == () and not away.no_save


async def test_domain_delete_with_redirects_into_it_is_refused_and_force_clears(env) -> None:
    await ok(env, "domain", "add", "example.com")
    await ok(env, "mailbox", "add", "ann@example.com")
    await ok(env, "domain", "add", "old.example", "--default-action", "redirect-domain",
             "--redirect-to", "example.com")
    await ok(env, "domain", "add", "other.example")
    await ok(env, "mailbox", "add", "fwd@other.example", "--copy-to", "ann@example.com",
             "--no-save")
    err = await refused(env, "domain", "delete", "example.com", "--yes")
    assert "domain old.example redirects its unknown addresses to domain example.com" in err
    assert "mailbox fwd@other.example" in err
    out = await ok(env, "domain", "delete", "example.com", "--yes", "--force")
    assert "deleted example.com and 1 mailbox(es)" in out
    assert "domain old.example: default action set to reject" in out
    assert "mailbox fwd@other.example: copy removed, do-not-save turned off" in out
    old = await env.store.get_domain("old.example")
    assert old is not None and old.default_action == "reject"
