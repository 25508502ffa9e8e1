"""Regressions found by walking the README's Provisioning section as a new user: error messages
in panel words, the space-separated alias/copy fields of the panel, aligned output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from test_admin_support import CLI, ENV, AdminEnv, admin_server, run


@pytest.fixture
async def env() -> AsyncIterator[AdminEnv]:
    async with admin_server() as e:
        await e.store.create_domain("example.com")
        await e.store.create_mailbox("info@example.com")
        await e.store.create_mailbox("ann@example.com")  # a local copy target
        yield e


async def cli(env: AdminEnv, *args: str) -> tuple[int, str, str]:
    return await run([*CLI, "--socket", env.socket, *args], env=ENV)


async def test_bad_alias_error_says_alias(env: AdminEnv) -> None:
    rc, out, err = await cli(env, "mailbox", "edit", "info@example.com", "--alias", "Bad_Alias")
    assert (rc, out) == (1, "")
    assert err.startswith("mailpolicy: aliases: alias 'Bad_Alias' may only contain"), err


async def test_schema_errors_are_in_plain_words(env: AdminEnv) -> None:
    rc, _out, err = await cli(env, "autoreply", "set", "info@example.com", "--start",
                              "2027-13-01")
    assert (rc, err) == (1, "mailpolicy: start: Expected a date YYYY-MM-DD\n")
    rc, _out, err = await cli(env, "autoreply", "set", "info@example.com",
                              "--interval-days", "0")
    assert rc == 1 and err.startswith("mailpolicy: interval_days: ") and "$." not in err, err


async def test_alias_and_copy_accept_space_separated_lists(env: AdminEnv) -> None:
    rc, out, err = await cli(env, "mailbox", "edit", "info@example.com", "--alias",
                             "sales office", "--alias", "help,sales", "--copy-to",
                             "boss@example.net ann", "--json")
    assert rc == 0, err
    m = json.loads(out)
    assert m["aliases"] == ["sales", "office", "help"]
    assert m["copies_to"] == ["boss@example.net", "ann@example.com"]


async def test_settings_values_are_aligned(env: AdminEnv) -> None:
    rc, out, err = await cli(env, "mailbox", "settings", "info@example.com")
    assert rc == 0, err
    lines = out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["Address", "Login", "Password", "IMAP",
                                                 "SMTP", "SMTPS"]
    starts = {len(ln) - len(ln.split(":", 1)[1].lstrip()) for ln in lines}
    assert len(starts) == 1, out
    assert "IMAP:     mail.example.com port 993 (ssl)" in lines
    assert "SMTPS:    mail.example.com port 465 (ssl)" in lines


async def test_autoreply_active_names_its_dates(env: AdminEnv) -> None:
    rc, out, err = await cli(env, "autoreply", "set", "info@example.com", "--message", "Away",
                             "--enable", "--start", "2026-12-20", "--end", "2027-01-03")
    assert rc == 0, err
    assert "Active:        yes, from 2026-12-20 until 2027-01-03" in out.splitlines()
    rc, out, err = await cli(env, "autoreply", "set", "info@example.com", "--start", "",
                             "--end", "")
    assert rc == 0 and "Active:        yes" in out.splitlines(), (out, err)
