"""Admin API over a real Unix socket with a real store: resources, usage, clear, delete,
autoresponder, settings, DNS records, log-in-as tokens and the audit log."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import AsyncIterator

import pytest
from test_admin_support import AdminEnv, admin_server

from mailpolicy import admin

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
async def admin_env() -> AsyncIterator[AdminEnv]:
    async with admin_server() as env:
        yield env


async def _domain(env: AdminEnv, name: str = "example.com", **kw: object) -> dict:
    return await env.ok("POST", "/v1/domains", {"name": name, **kw})


async def test_socket_file_mode_and_cleanup(admin_env: AdminEnv) -> None:
    st = os.stat(admin_env.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    # a second server on the same live socket is refused, the first keeps serving
    with pytest.raises(OSError, match="in use"):
        await admin.start(admin_env.cfg, admin_env.store)
    assert (await admin_env.call("GET", "/v1/domains"))[0] == 200


async def test_stale_socket_is_replaced_and_removed_on_close() -> None:
    async with admin_server() as env:
        path = env.cfg.admin_socket
        env.server.close()
        await env.server.wait_closed()
        assert not path.exists()
        import socket

        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))  # a leftover socket file nobody listens on
        stale.close()
        [server] = await admin.start(env.cfg, env.store)
        env.server = server
        await env.session.close()
        import aiohttp

        env.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)))
        assert (await env.call("GET", "/v1/domains"))[0] == 200


async def test_domain_crud(admin_env: AdminEnv) -> None:
    env = admin_env
    d = await _domain(env, "Bücher.Example", owner="alice", dmarc=True)
    assert d["name"] == "xn--bcher-kva.example" and d["unicode_name"] == "bücher.example"
    assert d["outbound_ip"] == "127.0.0.1" and d["owner"] == "alice"
    # "auto" picks the pool address with the fewest domains
    d2 = await _domain(env, "second.example", outbound_ip="auto", default_action="discard")
    assert d2["outbound_ip"] == "127.0.0.2"
    d3 = await _domain(env, "third.example", outbound_ip="127.0.0.1",
                       default_action="redirect-domain", redirect_to="second.example")
    assert d3["redirect_to"] == "second.example"
    listed = (await env.ok("GET", "/v1/domains"))["domains"]
    assert [x["name"] for x in listed] == ["second.example", "third.example",
                                           "xn--bcher-kva.example"]
    shown = await env.ok("GET", "/v1/domains/bücher.example")
    assert shown["dmarc"] is True and shown["mailboxes"] == 0
    edited = await env.ok("PATCH", "/v1/domains/second.example",
                          {"default_action": "redirect", "redirect_to": "x@elsewhere.example",
                           "owner": "bob", "dmarc_policy": "reject"})
    assert (edited["default_action"], edited["redirect_to"], edited["owner"]) == (
        "redirect", "x@elsewhere.example", "bob")
    status, err = await env.call("DELETE", "/v1/domains/third.example")
    assert status == 400 and err["field"] == "confirm"
    assert (await env.ok("DELETE", "/v1/domains/third.example?confirm=true"))["deleted"] == (
        "third.example")
    assert (await env.call("GET", "/v1/domains/third.example"))[0] == 404


async def test_dns_records(admin_env: AdminEnv) -> None:
    env = admin_env
    await _domain(env, "example.com", dmarc=True, dmarc_policy="quarantine",
                  dmarc_rua="reports@example.com", dmarc_adkim="s")
    await _domain(env, "plain.example")
    res = await env.ok("GET", "/v1/domains/example.com/dns-records")
    dmarc = [r for r in res["records"] if r["name"] == "_dmarc.example.com."]
    assert dmarc == [{"name": "_dmarc.example.com.", "type": "TXT", "purpose": dmarc[0]["purpose"],
                      "value": "v=DMARC1; p=quarantine; rua=mailto:reports@example.com; adkim=s"}]
    assert '_dmarc.example.com.\tIN\tTXT\t"v=DMARC1; p=quarantine;' in res["zone"]
    spf = [r for r in res["records"] if r["value"].startswith("v=spf1")]
    # the test pool is loopback: never recommended in SPF, and said so
    assert [r["value"] for r in spf] == ["v=spf1 mx ~all"]
    assert "127.0.0.1 is not routable" in res["warnings"][0]
    assert any(r["name"].endswith("._domainkey.example.com.") and r["type"] == "TXT"
               and r["value"].startswith("v=DKIM1; k=rsa; p=") for r in res["records"])
    srv = {r["name"]: r["value"] for r in res["records"] if r["type"] == "SRV"}
    assert srv["_submission._tcp.example.com."] == "0 1 587 mail.example.com."
    assert srv["_submissions._tcp.example.com."] == "0 1 465 mail.example.com."
    assert srv["_imaps._tcp.example.com."] == "0 1 993 mail.example.com."
    assert srv["_imap._tcp.example.com."] == "0 0 0 ."
    plain = await env.ok("GET", "/v1/domains/plain.example/dns-records")
    assert not any(r["name"].startswith("_dmarc") for r in plain["records"])
    # turning DMARC off removes the record
    await env.ok("PATCH", "/v1/domains/example.com", {"dmarc": False})
    res = await env.ok("GET", "/v1/domains/example.com/dns-records")
    assert not any(r["name"].startswith("_dmarc") for r in res["records"])


async def test_mailbox_crud_usage_and_properties(admin_env: AdminEnv) -> None:
    env = admin_env
    await _domain(env)
    await env.ok("POST", "/v1/mailboxes", {"address": "ann@example.com", "max_size": None})
    m = await env.ok("POST", "/v1/mailboxes", {
        "address": "Joe@Example.com", "password": "s3cret-pass", "aliases": ["j", "joseph"],
        "max_size": "1K", "copies_to": ["ann", "out@remote.example"]})
    assert m["address"] == "joe@example.com" and m["has_password"] is True
    assert "password" not in m and "password_hash" not in m
    assert m["copies_to"] == ["ann@example.com", "out@remote.example"]
    env.deliver("joe@example.com", 700)
    env.deliver("joe@example.com", 400, folder=".Sent", sub="cur")
    await env.ok("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
                 {"message": "away", "enabled": True})
    boxes = {b["address"]: b for b in (await env.ok("GET", "/v1/mailboxes"))["mailboxes"]}
    joe = boxes["joe@example.com"]
    assert joe["usage"] == {"used": 1100, "max": 1024}
    assert joe["properties"] == {"enabled": True, "forwards": True, "no_save": False,
                                 "autoreply": True, "over_quota": True}
    assert boxes["ann@example.com"]["usage"] == {"used": 0, "max": None}
    assert boxes["ann@example.com"]["properties"]["forwards"] is False
    only = await env.ok("GET", "/v1/mailboxes?domain=example.com")
    assert len(only["mailboxes"]) == 2
    # edit everything but the name
    m = await env.ok("PATCH", "/v1/mailboxes/joe@example.com", {
        "aliases": ["jo"], "max_size": "2G", "no_save": True, "enabled": False})
    assert (m["aliases"], m["max_size"], m["no_save"], m["enabled"]) == (
        ["jo"], 2 * 1024**3, True, False)
    assert m["properties"]["over_quota"] is False and m["properties"]["no_save"] is True
    m = await env.ok("PATCH", "/v1/mailboxes/joe@example.com", {"max_size": None})
    assert m["max_size"] is None and m["max_size_text"] == "unlimited"
    settings = await env.ok("GET", "/v1/mailboxes/joe@example.com/settings")
    assert settings["login"] == "joe@example.com"
    assert settings["imap"] == {"host": "mail.example.com", "port": 993, "security": "ssl",
                                "username": "joe@example.com", "authentication": "password"}
    assert settings["smtp"]["port"] == 587 and settings["smtp"]["security"] == "starttls"
    assert settings["smtps"]["port"] == 465 and settings["smtps"]["security"] == "ssl"
    assert "pop3" not in settings  # client_settings.pop3_enabled is off by default


async def test_clear_keeps_mailbox_and_delete_removes_maildir(admin_env: AdminEnv) -> None:
    env = admin_env
    await _domain(env)
    await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com"})
    msg1 = env.deliver("joe@example.com", 100)
    msg2 = env.deliver("joe@example.com", 50, folder=".Archive", sub="cur")
    status, err = await env.call("POST", "/v1/mailboxes/joe@example.com/clear")
    assert (status, err["error"], err["field"]) == (400, "confirm_required", "confirm")
    assert msg1.exists() and msg2.exists()
    res = await env.ok("POST", "/v1/mailboxes/joe@example.com/clear", {"confirm": True})
    assert res == {"cleared": "joe@example.com", "freed": 150}
    assert not msg1.exists() and not msg2.exists()
    assert (env.maildir("joe@example.com") / ".Archive" / "cur").is_dir()
    assert (await env.ok("GET", "/v1/mailboxes/joe@example.com"))["usage"]["used"] == 0
    audit = await env.ok("GET", "/v1/audit?target=joe@example.com&limit=1")
    assert audit["entries"][0]["action"] == "mailbox.clear"
    assert audit["entries"][0]["actor"] == "root"
    env.deliver("joe@example.com", 10)
    home = env.maildir("joe@example.com").parent
    assert (await env.call("DELETE", "/v1/mailboxes/joe@example.com"))[0] == 400
    assert home.exists()
    await env.ok("DELETE", "/v1/mailboxes/joe@example.com?confirm=true")
    assert not home.exists()
    assert not any(p.name.startswith(".deleted") for p in home.parent.iterdir())
    assert (await env.call("GET", "/v1/mailboxes/joe@example.com"))[0] == 404


async def test_delete_domain_removes_its_mailboxes_and_maildirs(admin_env: AdminEnv) -> None:
    env = admin_env
    await _domain(env)
    await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com"})
    env.deliver("joe@example.com", 10)
    res = await env.ok("DELETE", "/v1/domains/example.com", {"confirm": True})
    assert res == {"deleted": "example.com", "mailboxes": ["joe@example.com"], "cleared": []}
    assert not (env.cfg.maildir_root / "example.com").exists()
    assert await env.store.list_mailboxes() == []


async def test_autoresponder_roundtrip(admin_env: AdminEnv) -> None:
    env = admin_env
    await _domain(env)
    await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com"})
    url = "/v1/mailboxes/joe@example.com/autoresponder"
    empty = await env.ok("GET", url)
    assert empty["enabled"] is False and empty["active"] is False and empty["attachment"] is None
    ar = await env.ok("PUT", url, {
        "enabled": True, "from": "Joe Bloggs <joe@example.com>", "subject": "Out of office",
        "message": "I am away.\nBack on Monday.", "start": "2026-01-01", "end": "2026-01-31",
        "interval_days": 3,
        "attachment": {"filename": "map.dat", "data": base64.b64encode(PNG).decode(),
                       "content_type": "text/plain"}})
    assert ar["active"] is True and ar["from"] == "Joe Bloggs <joe@example.com>"
    assert (ar["start"], ar["end"], ar["interval_days"]) == ("2026-01-01", "2026-01-31", 3)
    # the content type is detected from the bytes, not taken from the client
    assert ar["attachment"] == {"filename": "map.dat", "content_type": "image/png",
                                "size": len(PNG)}
    stored = await env.store.autoreplies.get((await env.store.get_mailbox(
        "joe@example.com")).id)
    assert stored.attachment.data == PNG
    # fields left out keep their value; an empty message turns it off
    ar = await env.ok("PUT", url, {"message": ""})
    assert ar["active"] is False and ar["enabled"] is True
    assert ar["attachment"]["filename"] == "map.dat" and ar["subject"] == "Out of office"
    ar = await env.ok("PUT", url, {"attachment": None, "start": None})
    assert ar["attachment"] is None and ar["start"] is None and ar["end"] == "2026-01-31"
    assert (await env.ok("GET", url))["subject"] == "Out of office"


async def test_login_token_is_single_use(admin_env: AdminEnv) -> None:
    env = admin_env
    await _domain(env)
    await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com"})
    tok = await env.ok("POST", "/v1/mailboxes/joe@example.com/login-token")
    assert tok["address"] == "joe@example.com" and len(tok["token"]) >= 32
    assert (await env.ok("POST", "/v1/login-as", {"token": tok["token"]})) == {
        "address": "joe@example.com"}
    status, err = await env.call("POST", "/v1/login-as", {"token": tok["token"]})
    assert (status, err["field"]) == (403, "token")
    status, err = await env.call("POST", "/v1/login-as", {"token": "made-up"})
    assert status == 403
    rows = (await env.ok("GET", "/v1/audit?target=joe@example.com"))["entries"]
    assert rows[0]["action"] == "mailbox.login_as" and rows[0]["actor"] == "root"


async def test_every_change_leaves_an_audit_row(admin_env: AdminEnv) -> None:
    env = admin_env
    steps = [
        ("POST", "/v1/domains", {"name": "example.com"}, "domain.create"),
        ("PATCH", "/v1/domains/example.com", {"owner": "ann"}, "domain.update"),
        ("POST", "/v1/mailboxes", {"address": "joe@example.com"}, "mailbox.create"),
        ("PATCH", "/v1/mailboxes/joe@example.com", {"password": "another-secret-1"},
         "mailbox.update"),
        ("PUT", "/v1/mailboxes/joe@example.com/autoresponder", {"message": "x"},
         "autoresponder.set"),
        ("POST", "/v1/mailboxes/joe@example.com/clear", {"confirm": True}, "mailbox.clear"),
        ("DELETE", "/v1/mailboxes/joe@example.com", {"confirm": True}, "mailbox.delete"),
        ("DELETE", "/v1/domains/example.com", {"confirm": True}, "domain.delete"),
    ]
    for method, path, body, action in steps:
        before = len(await env.store.list_audit(limit=1000))
        await env.ok(method, path, body)
        rows = await env.store.list_audit(limit=1000)
        if action == "domain.create":  # then its DKIM key is made (audited too)
            assert rows[0]["action"] == "domain.dkim_key"
            rows = rows[1:]
        assert len(rows) == before + 1, action
        assert (rows[0]["action"], rows[0]["actor"]) == (action, "root")
        assert "another-secret-1" not in str(rows[0]["detail"])
