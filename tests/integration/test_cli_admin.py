"""The `mailpolicy` CLI as a real process against a real admin server: every verb, tables,
--json, confirmations, exit codes (0 done, 1 refused, 2 usage) and the default socket."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_admin_support import (
    CLI,
    ENV,
    AdminEnv,
    admin_server,
    cli_as,
    needs_root,
    run,
    run_as,
)

from mailpolicy.config import DEFAULT_CONFIG_FILE
from mailpolicy.store.passwords import verify_password


@pytest.fixture
async def env() -> AsyncIterator[AdminEnv]:
    async with admin_server() as e:
        yield e


async def cli(env: AdminEnv, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    return await run([*CLI, "--socket", env.socket, *args], stdin=stdin, env=ENV)


async def ok(env: AdminEnv, *args: str, stdin: bytes = b"") -> str:
    rc, out, err = await cli(env, *args, stdin=stdin)
    assert rc == 0, (args, out, err)
    return out


async def test_domain_verbs(env: AdminEnv) -> None:
    out = await ok(env, "domain", "add", "example.com", "--owner", "alice", "--ip", "auto",
                   "--dmarc", "--dmarc-policy", "reject", "--dmarc-rua", "dmarc@example.com")
    assert "Outbound IP:" in out and "127.0.0.1" in out
    await ok(env, "domain", "add", "target.example", "--ip", "127.0.0.2")
    await ok(env, "domain", "add", "other.example", "--default-action", "redirect-domain",
             "--redirect-to", "target.example")
    shown = json.loads(await ok(env, "domain", "show", "example.com", "--json"))
    assert (shown["owner"], shown["dmarc"], shown["dmarc_policy"], shown["dmarc_rua"]) == (
        "alice", True, "reject", "dmarc@example.com")
    out = await ok(env, "domain", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["Name", "Owner", "Outbound", "IP", "Default", "action", "DMARC",
                                "Mailboxes"]
    assert any(ln.split()[:2] == ["example.com", "alice"] for ln in lines)
    assert any("redirect-domain target.example" in ln for ln in lines)
    listed = json.loads(await ok(env, "domain", "list", "--json"))
    assert sorted(d["name"] for d in listed["domains"]) == [
        "example.com", "other.example", "target.example"]
    edited = json.loads(await ok(env, "domain", "edit", "example.com", "--no-dmarc",
                                 "--default-action", "discard", "--owner", "bob", "--json"))
    assert (edited["dmarc"], edited["default_action"], edited["owner"]) == (
        False, "discard", "bob")
    d = await env.store.get_domain("example.com")
    assert d is not None and d.owner == "bob" and not d.dmarc


async def test_mailbox_verbs(env: AdminEnv) -> None:
    await ok(env, "domain", "add", "example.com")
    await ok(env, "mailbox", "add", "ann@example.com")  # a local copy target must exist
    out = await ok(env, "mailbox", "add", "joe@example.com", "--password-stdin",
                   "--alias", "j", "--alias", "joseph", "--max-size", "500M",
                   "--copy-to", "ann", "--copy-to", "out@remote.example",
                   stdin=b"correct horse battery\n")
    assert "Size:" in out and "0/500M" in out
    m = await env.store.get_mailbox("joe@example.com")
    assert m is not None and verify_password("correct horse battery", m.password_hash)
    assert m.aliases == ("j", "joseph") and m.copies_to == ("ann@example.com",
                                                              "out@remote.example")
    env.deliver("joe@example.com", 1536)
    out = await ok(env, "mailbox", "list")
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[0] == ["Name", "Properties", "Size"]
    assert ["joe@example.com", "enabled,forwards", "1.5K/500M"] in rows
    assert ["ann@example.com", "enabled", "0/unlimited"] in rows
    listed = json.loads(await ok(env, "mailbox", "list", "--domain", "example.com", "--json"))
    joe = next(b for b in listed["mailboxes"] if b["name"] == "joe")
    assert joe["usage"] == {"used": 1536, "max": 500 * 1024**2}
    # edit: aliases added to the current ones unless cleared; copies, flags
    await ok(env, "mailbox", "edit", "joe@example.com", "--alias", "jo")
    m = await env.store.get_mailbox("joe@example.com")
    assert m is not None and m.aliases == ("j", "joseph", "jo")
    out = await ok(env, "mailbox", "edit", "joe@example.com", "--clear-aliases", "--alias",
                   "joey", "--clear-copies", "--copy-to", "ann", "--no-save", "--disable",
                   "--max-size", "unlimited", "--json")
    edited = json.loads(out)
    assert (edited["aliases"], edited["copies_to"], edited["no_save"], edited["enabled"],
            edited["max_size"]) == (["joey"], ["ann@example.com"], True, False, None)
    await ok(env, "mailbox", "edit", "joe@example.com", "--password-stdin", "--save",
             "--enable", stdin=b"new password 2\n")
    m = await env.store.get_mailbox("joe@example.com")
    assert m is not None and verify_password("new password 2", m.password_hash)
    assert m.enabled and not m.no_save
    shown = json.loads(await ok(env, "mailbox", "show", "joe@example.com", "--json"))
    assert shown["properties"]["forwards"] is True and "password_hash" not in shown
    out = await ok(env, "mailbox", "settings", "joe@example.com")
    assert "Login:" in out and "joe@example.com" in out
    assert "IMAP:" in out and "mail.example.com port 993 (ssl)" in out
    settings = json.loads(await ok(env, "mailbox", "settings", "joe@example.com", "--json"))
    assert settings["smtp"]["security"] == "starttls"


async def _with_tty(env: AdminEnv, answer: bytes, *args: str) -> tuple[int, str, str]:
    """Run the CLI with a terminal on stdin and type `answer`."""
    master, slave = os.openpty()
    try:
        os.write(master, answer)
        proc = await asyncio.create_subprocess_exec(
            *CLI, "--socket", env.socket, *args, stdin=slave, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=ENV)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_delete_and_clear_ask_and_refuse_without_terminal(env: AdminEnv) -> None:
    await ok(env, "domain", "add", "example.com")
    for name in ("a", "b", "c"):
        await ok(env, "mailbox", "add", f"{name}@example.com")
    msg = env.deliver("a@example.com", 10)
    before = await env.snapshot()
    for verb in (["mailbox", "delete", "a@example.com"], ["mailbox", "clear", "a@example.com"],
                 ["domain", "delete", "example.com"]):
        rc, _out, err = await cli(env, *verb)
        assert rc == 1 and "--yes" in err, (verb, err)
    rc, _out, err = await _with_tty(env, b"n\n", "mailbox", "delete", "a@example.com")
    assert rc == 1 and "[y/N]" in err and "not confirmed" in err
    assert await env.snapshot() == before and msg.exists()
    rc, out, err = await _with_tty(env, b"y\n", "mailbox", "clear", "a@example.com")
    assert rc == 0 and "cleared a@example.com" in out, err
    assert not msg.exists() and await env.store.get_mailbox("a@example.com") is not None
    rc, out, err = await _with_tty(env, b"yes\n", "mailbox", "delete", "a@example.com",
                                   "b@example.com")
    assert rc == 0 and "deleted a@example.com" in out and "deleted b@example.com" in out
    assert not env.maildir("a@example.com").parent.exists()
    # an unknown address among several refuses before deleting anything
    rc, _out, err = await cli(env, "mailbox", "delete", "c@example.com", "zz@example.com",
                              "--yes")
    assert rc == 1 and "zz@example.com" in err
    assert await env.store.get_mailbox("c@example.com") is not None
    out = await ok(env, "domain", "delete", "example.com", "--yes")
    assert "deleted example.com and 1 mailbox(es)" in out
    assert await env.store.list_domains() == []


async def test_autoreply_verbs(env: AdminEnv, tmp_path: Path) -> None:
    await ok(env, "domain", "add", "example.com")
    await ok(env, "mailbox", "add", "joe@example.com")
    text = tmp_path / "away.txt"
    text.write_text("Bin weg.\nGrüße, Joe\n")
    pdf = tmp_path / "Plan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    out = await ok(env, "autoreply", "set", "joe@example.com", "--from", "Joe <joe@example.com>",
                   "--subject", "Abwesend", "--message-file", str(text), "--attach", str(pdf),
                   "--enable", "--start", "2026-07-01", "--end", "2026-07-31",
                   "--interval-days", "2")
    assert "Plan.pdf (application/pdf, 1033 bytes)" in out and "Grüße, Joe" in out
    shown = json.loads(await ok(env, "autoreply", "show", "joe@example.com", "--json"))
    assert (shown["enabled"], shown["active"], shown["subject"], shown["start"], shown["end"],
            shown["interval_days"]) == (True, True, "Abwesend", "2026-07-01", "2026-07-31", 2)
    mb = await env.store.get_mailbox("joe@example.com")
    assert mb is not None
    ar = await env.store.autoreplies.get(mb.id)
    assert ar is not None and ar.attachment is not None
    assert ar.attachment.data == pdf.read_bytes()
    out = await ok(env, "autoreply", "set", "joe@example.com", "--message", "", "--no-attach",
                   "--end", "")
    assert "Active:" in out and "(empty: the autoresponder is off)" in out
    shown = json.loads(await ok(env, "autoreply", "show", "joe@example.com", "--json"))
    assert shown["attachment"] is None and shown["end"] is None and shown["active"] is False
    assert shown["subject"] == "Abwesend"


async def test_dns_records(env: AdminEnv) -> None:
    await ok(env, "domain", "add", "example.com", "--dmarc", "--dmarc-policy", "quarantine")
    out = await ok(env, "dns-records", "example.com", "--zone")
    assert '_dmarc.example.com.\tIN\tTXT\t"v=DMARC1; p=quarantine"' in out
    assert "._domainkey.example.com.\tIN\tTXT\t\"v=DKIM1; k=rsa; p=" in out
    assert "_submission._tcp.example.com.\tIN\tSRV\t0 1 587 mail.example.com." in out
    res = json.loads(await ok(env, "dns-records", "example.com", "--json"))
    assert any({"name": "_dmarc.example.com.", "type": "TXT"}.items() <= r.items()
               for r in res["records"])
    assert "_dmarc.example.com. TXT v=DMARC1" in await ok(env, "dns-records", "example.com")


async def test_exit_codes(env: AdminEnv) -> None:
    await ok(env, "domain", "add", "example.com")
    for args in (["frobnicate"], ["mailbox", "add"], ["domain", "add", "x.example", "--ip"],
                 ["autoreply", "set", "a@example.com", "--message", "x", "--message-file", "f"],
                 ["domain", "edit", "example.com", "--dmarc", "--no-dmarc"], []):
        rc, _out, err = await cli(env, *args)
        assert rc == 2 and "usage:" in err, args
    rc, out, err = await cli(env, "mailbox", "add", "Bad Name@example.com")
    assert (rc, out) == (1, "") and err.startswith("mailpolicy: name: ")
    rc, _out, err = await cli(env, "mailbox", "add", "x@example.com", "--no-save")
    assert rc == 1 and "no_save:" in err
    rc, _out, err = await cli(env, "mailbox", "show", "nobody@example.com")
    assert rc == 1 and "no such mailbox" in err
    rc, _out, err = await cli(env, "autoreply", "set", "x@example.com", "--attach",
                              "/nonexistent/file")
    assert rc == 1 and "cannot read attachment" in err
    rc, _out, err = await run([*CLI, "--socket", "/nonexistent/admin.sock", "domain", "list"],
                              env=ENV)
    assert rc == 1 and "cannot reach the admin socket" in err
    assert len(await env.store.list_mailboxes()) == 0


async def test_default_socket_comes_from_the_config(env: AdminEnv, tmp_path: Path) -> None:
    await ok(env, "domain", "add", "example.com")
    conf = tmp_path / "mailpolicy.toml"
    conf.write_text(f'[paths]\nadmin_socket = "{env.socket}"\n')
    rc, out, err = await run([*CLI, "-c", str(conf), "domain", "list"], env=ENV)
    assert rc == 0 and "example.com" in out, err
    if DEFAULT_CONFIG_FILE.exists():
        return
    # without -c and --socket: ./var/admin.sock of the working directory
    rc, out, err = await run([*CLI, "domain", "list", "--json"], env=ENV,
                             cwd=str(env.cfg.admin_socket.parent.parent))
    assert rc == 1 and "var/admin.sock" in err
    (env.tmp / "var").mkdir()
    os.symlink(env.socket, env.tmp / "var" / "admin.sock")
    rc, out, err = await run([*CLI, "domain", "list", "--json"], env=ENV, cwd=str(env.tmp))
    assert rc == 0 and json.loads(out)["domains"][0]["name"] == "example.com", err


async def test_postfix_config_prints_the_fragments(tmp_path: Path) -> None:
    conf = tmp_path / "mailpolicy.toml"
    conf.write_text('[outbound]\nip_pool = ["127.0.0.1"]\n')
    rc, out, err = await run([*CLI, "postfix-config", "-c", str(conf), "--json"], env=ENV)
    assert rc == 0, err
    frag = json.loads(out)
    assert set(frag) == {"main_cf", "master_cf", "warnings"}
    rc, out, err = await run([*CLI, "postfix-config", "-c", str(tmp_path / "missing.toml")],
                             env=ENV)
    assert rc == 1 and "missing.toml" in err


@needs_root
async def test_non_admin_user_is_refused(env: AdminEnv) -> None:
    os.chmod(env.socket, 0o666)
    cli, cli_env = cli_as("nobody", "nogroup")
    rc, _out, err = await run_as("nobody", "nogroup", [*cli, "--socket", env.socket,
                                                       "domain", "add", "evil.example"],
                                 env=cli_env)
    assert rc == 1 and "nobody is not root" in err
    assert await env.store.list_domains() == []
