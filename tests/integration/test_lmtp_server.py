"""LMTP over real sockets: per-recipient replies, pipelining, size limit, bare LF, quota, Junk."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from pathlib import Path

import pytest

from mailpolicy import config
from mailpolicy.lmtp import server
from mailpolicy.store import Store

pytestmark = pytest.mark.timeout(60)
LIMIT = 200_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    def __init__(self, cfg: config.Config, store: Store, port: int) -> None:
        self.cfg, self.store, self.port = cfg, store, port
        self.clients: list[smtplib.LMTP] = []

    def maildir(self, address: str, folder: str = "") -> Path:
        local, domain = address.split("@")
        md = self.cfg.maildir_root / domain / local / "Maildir"
        return md / folder if folder else md

    def messages(self, address: str, folder: str = "") -> list[bytes]:
        new = self.maildir(address, folder) / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []

    def client(self) -> smtplib.LMTP:
        c = self.track(smtplib.LMTP("127.0.0.1", self.port, timeout=10))
        assert c.docmd("LHLO", "client.test")[0] == 250
        return c

    def track(self, c: smtplib.LMTP) -> smtplib.LMTP:
        self.clients.append(c)
        return c

    async def close(self, servers: list) -> None:
        for c in self.clients:
            c.close()
        for s in servers:
            s.close()
            await asyncio.wait_for(s.wait_closed(), 5)
        await self.store.close()


async def make_env(tmp_path: Path, **overrides: dict) -> tuple[Env, list]:
    data = {"paths": {"state_dir": str(tmp_path)},
            "listen": {"lmtp": f"127.0.0.1:{free_port()}"},
            "limits": {"message_size_limit": LIMIT - config.SIZE_HEADROOM},
            "reinject": {"port": free_port(), "timeout_seconds": 2.0},
            "autoreply": {"send_attempts": 1}}
    for k, v in overrides.items():
        data.setdefault(k, {}).update(v)
    cfg = config.from_dict(data)
    store = await Store.open(cfg.store_url)
    await store.create_domain("example.test")
    await store.create_domain("discard.test", default_action="discard")
    await store.create_mailbox("alice@example.test", aliases=["al"])
    await store.create_mailbox("bob@example.test")
    await store.create_mailbox("off@example.test", enabled=False)
    await store.create_mailbox("tiny@example.test", max_size=1000)
    await store.create_mailbox("fwd@example.test", copies_to=["x@elsewhere.test"], no_save=True)
    servers = await server.start(cfg, store)
    return Env(cfg, store, int(cfg.listen.lmtp.rsplit(":", 1)[1])), servers


@pytest.fixture
async def env(tmp_path):
    e, servers = await make_env(tmp_path)
    yield e
    await e.close(servers)


def replies_after_data(c: smtplib.LMTP, message: bytes, n: int) -> list[tuple[int, bytes]]:
    assert c.docmd("DATA")[0] == 354
    c.send(message)
    return [c.getreply() for _ in range(n)]


async def test_lhlo_announces_lmtp_extensions(env):
    def run():
        c = env.track(smtplib.LMTP("127.0.0.1", env.port, timeout=10))
        code, text = c.docmd("LHLO", "client.test")
        assert c.docmd("HELO", "x")[0] == 500
        assert c.docmd("EHLO", "x")[0] == 500
        c.quit()
        return code, text

    code, text = await asyncio.to_thread(run)
    lines = text.decode().split("\n")
    assert code == 250
    for kw in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", f"SIZE {LIMIT}"):
        assert kw in lines


async def test_mixed_recipients_get_one_reply_each_in_order(env):
    rcpts = ["alice@example.test", "nobody@example.test", "off@example.test",
             "bob@example.test", "al@example.test", "Alice+tag@EXAMPLE.test"]

    def run():
        c = env.client()
        assert c.docmd("MAIL FROM:<sender@remote.test>")[0] == 250
        at_rcpt = [c.docmd(f"RCPT TO:<{r}>") for r in rcpts]
        after = replies_after_data(c, b"Subject: hi\r\n\r\nhello\r\n.\r\n", 4)
        noop = c.docmd("NOOP")
        c.quit()
        return at_rcpt, after, noop

    at_rcpt, after, noop = await asyncio.to_thread(run)
    assert [r[0] for r in at_rcpt] == [250, 450, 550, 250, 250, 250]
    assert at_rcpt[1][1].startswith(b"4.1.1 <nobody@example.test>")
    assert at_rcpt[2][1].startswith(b"5.2.1 <off@example.test>")
    assert [r[0] for r in after] == [250, 250, 250, 250]
    assert after[0][1].startswith(b"2.0.0 <alice@example.test>")
    assert after[3][1].startswith(b"2.0.0 <Alice+tag@EXAMPLE.test>")
    assert noop[0] == 250  # still in sync after the per-recipient replies
    assert len(env.messages("alice@example.test")) == 1  # one copy for 3 names of one mailbox
    assert len(env.messages("bob@example.test")) == 1


async def test_full_mailbox_is_refused_at_data_per_recipient(env):
    def run():
        c = env.client()
        c.docmd("MAIL FROM:<s@remote.test>")
        assert c.docmd("RCPT TO:<tiny@example.test>")[0] == 250
        assert c.docmd("RCPT TO:<bob@example.test>")[0] == 250
        return replies_after_data(c, b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n", 2)

    after = await asyncio.to_thread(run)
    assert after[0][0] == 552 and after[0][1].startswith(b"5.2.2 <tiny@example.test>")
    assert after[1][0] == 250
    assert env.messages("tiny@example.test") == []


async def test_quota_precheck_at_rcpt(env):
    def run():
        c = env.client()
        c.docmd("MAIL FROM:<s@remote.test> SIZE=5000")
        over = c.docmd("RCPT TO:<tiny@example.test>")
        c.docmd("RSET")
        c.docmd("MAIL FROM:<s@remote.test> SIZE=100")
        fits = c.docmd("RCPT TO:<tiny@example.test>")
        after = replies_after_data(c, b"Subject: s\r\n\r\n" + b"y" * 800 + b"\r\n.\r\n", 1)
        c.docmd("MAIL FROM:<s@remote.test>")
        full = c.docmd("RCPT TO:<tiny@example.test>")  # now past nothing, but at >= limit?
        return over, fits, after, full

    over, fits, after, full = await asyncio.to_thread(run)
    assert over[0] == 552 and over[1].startswith(b"5.2.2")
    assert fits[0] == 250 and after[0][0] == 250
    used = (env.maildir("tiny@example.test") / "maildirsize").read_text().split("\n")
    assert used[0] == "1000S"
    assert full[0] == 250  # 8xx bytes used of 1000: not yet full


async def test_quota_code_452_when_configured(tmp_path):
    e, servers = await make_env(tmp_path, policy={"quota_code": 452})
    try:
        def run():
            c = e.client()
            c.docmd("MAIL FROM:<s@remote.test> SIZE=5000")
            return c.docmd("RCPT TO:<tiny@example.test>")

        r = await asyncio.to_thread(run)
        assert r[0] == 452 and r[1].startswith(b"4.2.2")
    finally:
        await e.close(servers)


async def test_pipelined_transactions_and_commands_after_the_dot(env):
    msg = b"Subject: pipelined\r\n\r\n.leading dot\r\nend.\r\n"
    stuffed = msg.replace(b"\r\n.", b"\r\n..")
    batch = (b"LHLO c.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
             b"RCPT TO:<ghost@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
             + stuffed + b".\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
             + b"Subject: second\r\n\r\nx\r\n.\r\nQUIT\r\n")

    def run():
        with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
            s.sendall(batch)
            data = b""
            while not data.endswith(b"221 2.0.0 Bye\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode().split("\r\n")

    lines = [ln for ln in await asyncio.to_thread(run) if ln and not ln.startswith("250-")]
    codes = [ln[:3] for ln in lines]
    # greeting, LHLO, MAIL, 3×RCPT, 354, 2 replies after DATA, MAIL, RCPT, 354, 1 reply, QUIT
    assert codes == ["220", "250", "250", "250", "450", "250", "354", "250", "250",
                     "250", "250", "354", "250", "221"], lines
    assert env.messages("alice@example.test")[0].endswith(
        b"Subject: pipelined\n\n.leading dot\nend.\n")
    bob = env.messages("bob@example.test")
    assert len(bob) == 2 and any(m.startswith(b"Return-Path: <>\n") for m in bob)


async def test_size_limit(env):
    header = b"Subject: size\r\n\r\n"
    exact = header + b"z" * (LIMIT - len(header) - 2) + b"\r\n"
    assert len(exact) == LIMIT

    def run():
        c = env.client()
        too_big_declared = c.docmd(f"MAIL FROM:<s@remote.test> SIZE={LIMIT + 1}")
        c.docmd("MAIL FROM:<s@remote.test>")
        c.docmd("RCPT TO:<alice@example.test>")
        c.docmd("RCPT TO:<bob@example.test>")
        over = replies_after_data(c, b"z" + exact + b".\r\n", 2)
        c.docmd("MAIL FROM:<s@remote.test>")
        c.docmd("RCPT TO:<alice@example.test>")
        ok = replies_after_data(c, exact + b".\r\n", 1)
        return too_big_declared, over, ok, c.docmd("NOOP")

    declared, over, ok, noop = await asyncio.to_thread(run)
    assert declared[0] == 552 and declared[1].startswith(b"5.3.4")
    assert [r[0] for r in over] == [552, 552] and over[1][1].startswith(b"5.3.4 <bob@")
    assert ok[0][0] == 250 and noop[0] == 250
    assert len(env.messages("alice@example.test")) == 1
    assert env.messages("bob@example.test") == []


@pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"x\r\n.\nMAIL FROM:<e@x>\r\n"])
async def test_bare_lf_or_cr_refused_per_recipient(env, body):
    def run():
        c = env.client()
        c.docmd("MAIL FROM:<s@remote.test>")
        c.docmd("RCPT TO:<alice@example.test>")
        c.docmd("RCPT TO:<bob@example.test>")
        return replies_after_data(c, b"Subject: x\r\n\r\n" + body + b".\r\n", 2), c.docmd("NOOP")

    after, noop = await asyncio.to_thread(run)
    assert [(r[0], r[1][:5]) for r in after] == [(550, b"5.5.2"), (550, b"5.5.2")]
    assert noop[0] == 250
    assert env.messages("alice@example.test") == []


async def test_trace_headers_and_body_byte_for_byte(env):
    body = "Subject: =?utf-8?q?h=C3=A9?=\r\n\r\nß 8-bit\tline   \r\n\r\n".encode() + bytes(
        range(0x80, 0x100)) + b"\r\n"

    def run():
        c = env.client()
        c.docmd("MAIL FROM:<Sender@Remote.test> BODY=8BITMIME")
        c.docmd("RCPT TO:<al@example.test>")
        c.docmd("RCPT TO:<bob@example.test>")
        return replies_after_data(c, body + b".\r\n", 2)

    assert [r[0] for r in await asyncio.to_thread(run)] == [250, 250]
    lf = body.replace(b"\r\n", b"\n")
    assert env.messages("alice@example.test") == [
        b"Return-Path: <Sender@Remote.test>\nDelivered-To: alice@example.test\n" + lf]
    assert env.messages("bob@example.test") == [
        b"Return-Path: <Sender@Remote.test>\nDelivered-To: bob@example.test\n" + lf]


async def test_quarantine_marker_delivers_to_junk(env):
    msg = b"X-Mailpolicy-Quarantine: dmarc=fail p=reject\r\nSubject: spoof\r\n\r\nhi\r\n.\r\n"

    def run():
        c = env.client()
        c.docmd("MAIL FROM:<s@remote.test>")
        c.docmd("RCPT TO:<alice@example.test>")
        return replies_after_data(c, msg, 1)

    assert (await asyncio.to_thread(run))[0][0] == 250
    assert env.messages("alice@example.test") == []
    junk = env.messages("alice@example.test", ".Junk")
    assert len(junk) == 1 and b"X-Mailpolicy-Quarantine: dmarc=fail" in junk[0]


async def test_discard_domain_and_no_save_accept_without_storing(env):
    def run():
        c = env.client()
        c.docmd("MAIL FROM:<s@remote.test>")
        a = c.docmd("RCPT TO:<anyone@discard.test>")
        b = c.docmd("RCPT TO:<fwd@example.test>")
        return a, b, replies_after_data(c, b"Subject: x\r\n\r\nx\r\n.\r\n", 2)

    a, b, after = await asyncio.to_thread(run)
    assert a[0] == b[0] == 250 and [r[0] for r in after] == [250, 250]
    assert not (env.cfg.maildir_root / "discard.test").exists()
    assert env.messages("fwd@example.test") == []


async def test_data_without_rcpt_and_commands_before_lhlo(env):
    def run():
        c = env.track(smtplib.LMTP("127.0.0.1", env.port, timeout=10))
        before = c.docmd("MAIL FROM:<s@remote.test>")
        c.docmd("LHLO", "x")
        c.docmd("MAIL FROM:<s@remote.test>")
        return before, c.docmd("DATA"), c.docmd("RCPT TO:<bob@example.test> NOTIFY=NEVER")

    before, data, rcpt_param = await asyncio.to_thread(run)
    assert before[0] == 503 and before[1].startswith(b"5.5.1")
    assert data[0] == 503 and data[1].startswith(b"5.5.1")
    assert rcpt_param[0] == 555 and rcpt_param[1].startswith(b"5.5.4")


async def test_unix_socket_listener(tmp_path):
    sock = tmp_path / "lmtp.sock"
    e, servers = await make_env(tmp_path, listen={"lmtp_socket": str(sock)})
    try:
        def run():
            c = e.track(smtplib.LMTP(str(sock), timeout=10))
            c.docmd("LHLO", "x")
            c.docmd("MAIL FROM:<s@remote.test>")
            c.docmd("RCPT TO:<bob@example.test>")
            return replies_after_data(c, b"Subject: unix\r\n\r\nx\r\n.\r\n", 1)

        assert (await asyncio.to_thread(run))[0][0] == 250
        assert oct(sock.stat().st_mode & 0o777) == oct(server.SOCKET_MODE)
        assert len(e.messages("bob@example.test")) == 1
    finally:
        await e.close(servers)


async def test_autoreply_failure_never_affects_delivery(env):
    # the autoresponder's next hop is a closed port: sending fails, delivery must not
    await env.store.autoreplies.set("alice@example.test", enabled=True,
                                      message="I am away.", subject="Away")

    def run():
        c = env.client()
        c.docmd("MAIL FROM:<friend@remote.test>")
        c.docmd("RCPT TO:<alice@example.test>")
        after = replies_after_data(
            c, b"From: friend@remote.test\r\nTo: alice@example.test\r\nSubject: hi\r\n"
               b"Message-ID: <1@remote.test>\r\n\r\nhello\r\n.\r\n", 1)
        return after, c.docmd("NOOP")

    after, noop = await asyncio.to_thread(run)
    assert after[0][0] == 250 and noop[0] == 250
    assert len(env.messages("alice@example.test")) == 1


async def test_broken_paths_get_a_syntax_error_and_the_session_goes_on(env):
    def run():
        c = env.track(smtplib.LMTP("127.0.0.1", env.port, timeout=10))
        c.docmd("LHLO", "client.test")
        lone = c.docmd("MAIL FROM:<")  # aiosmtpd's own parser raises IndexError on it
        ok = c.docmd("MAIL FROM:<s@remote.test> SIZE=10")
        rcpt = c.docmd("RCPT TO:<")
        bracket = c.docmd("RCPT TO:a@[")  # ... and AttributeError on this one
        c.quit()
        return lone, ok, rcpt, bracket

    lone, ok, rcpt, bracket = await asyncio.to_thread(run)
    assert lone[0] == 553 and b"malformed" in lone[1].lower(), lone
    assert ok[0] == 250
    assert rcpt[0] == 553 and bracket[0] == 553, (rcpt, bracket)
