"""Autoresponder with a real Store on temp SQLite and an aiosmtpd sink as the reinjection hop."""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes, policy
from email.utils import make_msgid

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer

from mailpolicy import autoreply
from mailpolicy.autoreply import send as send_mod
from mailpolicy.config import from_dict
from mailpolicy.core.model import Attachment
from mailpolicy.store import Store

A, B = "alice@one.example", "bob@two.example"


class Sink:
    """Records each transaction; `answers` are popped per DATA (default 250)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.answers: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.answers:
            answer = self.answers.pop(0)
            if not answer.startswith("250"):
                return answer
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued"


@pytest.fixture
async def sink():
    handler = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTPServer(handler, hostname="sink.test"),
                                      "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    yield handler
    server.close()
    await server.wait_closed()


def make_cfg(tmp_path, port: int, listen: dict | None = None, **autoreply_cfg):
    return from_dict({"paths": {"state_dir": str(tmp_path)}, "listen": listen or {},
                      "reinject": {"host": "127.0.0.1", "port": port, "timeout_seconds": 5},
                      "filter": {"hostname": "mx.test"},
                      "autoreply": {"send_attempts": 3, **autoreply_cfg}})


async def open_store(tmp_path) -> Store:
    return await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'mailpolicy.db'}")


@pytest.fixture
async def store(tmp_path):
    s = await open_store(tmp_path)
    await s.create_domain("one.example")
    await s.create_domain("two.example")
    await s.create_mailbox(A)
    await s.create_mailbox(B, aliases=("robert",))
    await s.autoreplies.set(A, enabled=True, message="Alice is away.")
    await s.autoreplies.set(B, enabled=True, message="Bob is away. Grüße",
                              from_="Bob B <bob@two.example>")
    yield s
    await s.close()


def human(frm: str, to: str, subject: str = "hello", extra: str = "") -> bytes:
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: {make_msgid(domain='client.test')}\r\n{extra}\r\nHi there.\r\n").encode()


async def mb(store: Store, address: str):
    m = await store.get_mailbox(address)
    assert m is not None
    return m


async def test_two_autoresponders_exchange_one_reply_each_and_stop(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    await autoreply.on_delivered(cfg, store, await mb(store, B), A, human(A, B))
    await autoreply.on_delivered(cfg, store, await mb(store, A), B, human(B, A))
    assert len(sink.messages) == 2
    # feed every reply back as a delivery, bounded rounds; the worst case too: a broken relay
    # that put the replying mailbox back as envelope sender instead of <>
    seen = 0
    for _ in range(5):
        new = sink.messages[seen:]
        seen = len(sink.messages)
        if not new:
            break
        for mail_from, rcpts, data in new:
            replier = message_from_bytes(data, policy=policy.default)["From"].addresses[0]
            for rcpt in rcpts:
                target = await mb(store, rcpt)
                await autoreply.on_delivered(cfg, store, target, mail_from, data)
                await autoreply.on_delivered(cfg, store, target, replier.addr_spec, data)
    assert len(sink.messages) == 2
    # a second human message within the interval: no reply either
    await autoreply.on_delivered(cfg, store, await mb(store, B), A, human(A, B, "again"))
    await autoreply.on_delivered(cfg, store, await mb(store, A), B, human(B, A, "again"))
    assert len(sink.messages) == 2
    assert sorted(r[1][0] for r in sink.messages) == [A, B]


async def test_reply_envelope_and_headers(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    original = human("Alice <alice@one.example>", "Robert <robert@two.example>",
                     "Projekt Übersicht").replace(b"Projekt \xc3\x9cbersicht",
                                                   b"=?utf-8?q?Projekt_=C3=9Cbersicht?=")
    msgid = message_from_bytes(original)["Message-ID"]
    await autoreply.on_delivered(cfg, store, await mb(store, B), A, original)
    assert len(sink.messages) == 1
    mail_from, rcpts, data = sink.messages[0]
    assert mail_from == "<>" and rcpts == [A]  # aiosmtpd records MAIL FROM:<> as "<>"
    m = message_from_bytes(data, policy=policy.default)
    assert m["To"] == A
    assert m["From"].addresses[0].addr_spec == B and m["From"].addresses[0].display_name == "Bob B"
    assert str(m["Subject"]) == "Auto: Projekt Übersicht"
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["Precedence"] == "bulk" and m["X-Auto-Response-Suppress"] == "All"
    assert m["In-Reply-To"] == msgid and m["References"] == msgid
    assert m["Message-ID"] != msgid and m["Message-ID"].endswith("@mx.test>") and m["Date"]
    assert m.get_content().replace("\r\n", "\n") == "Bob is away. Grüße\n"
    assert data.isascii()


async def test_reply_with_attachment(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    await store.autoreplies.set(A, attachment=Attachment("away.pdf", "application/pdf", pdf))
    await autoreply.on_delivered(cfg, store, await mb(store, A), B, human(B, A))
    m = message_from_bytes(sink.messages[0][2], policy=policy.default)
    assert m.get_content_type() == "multipart/mixed"
    att = next(iter(m.iter_attachments()))
    assert (att.get_filename(), att.get_content_type(), att.get_content()) == (
        "away.pdf", "application/pdf", pdf)


async def test_suppressed_messages_get_no_reply(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    bob = await mb(store, B)
    for extra in ("Precedence: list\r\n", "List-Id: <l.one.example>\r\n",
                  "Auto-Submitted: auto-generated\r\n", "X-Spam-Flag: YES\r\n",
                  "X-Mailpolicy-Quarantine: dmarc=fail\r\n"):
        await autoreply.on_delivered(cfg, store, bob, A, human(A, B, extra=extra))
    await autoreply.on_delivered(cfg, store, bob, A, human(A, "list@one.example"))
    await autoreply.on_delivered(cfg, store, bob, "", human(A, B))
    await autoreply.on_delivered(cfg, store, bob, "MAILER-DAEMON@one.example", human(A, B))
    assert sink.messages == []
    # nothing was consumed by the suppressed ones: a personal message still gets its reply
    await autoreply.on_delivered(cfg, store, bob, A, human(A, B))
    assert len(sink.messages) == 1


async def test_concurrent_duplicate_deliveries_one_reply(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    msg, bob = human(A, B), await mb(store, B)
    await asyncio.gather(*(autoreply.on_delivered(cfg, store, bob, A, msg) for _ in range(10)))
    assert len(sink.messages) == 1


async def test_concurrent_duplicates_across_two_store_instances(tmp_path, store, sink):
    """Two engines on the same file stand in for two daemon processes."""
    cfg = make_cfg(tmp_path, sink.port)
    other = await open_store(tmp_path)
    try:
        msg, bob = human(A, B), await mb(store, B)
        await asyncio.gather(*(autoreply.on_delivered(cfg, s, bob, A, msg)
                               for _ in range(5) for s in (store, other)))
    finally:
        await other.close()
    assert len(sink.messages) == 1


async def test_state_survives_store_reopen(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    await autoreply.on_delivered(cfg, store, await mb(store, B), A, human(A, B))
    assert len(sink.messages) == 1
    reopened = await open_store(tmp_path)
    try:
        await autoreply.on_delivered(cfg, reopened, await mb(reopened, B), A, human(A, B))
        assert len(sink.messages) == 1
        # changing the text restarts the tracking
        await reopened.autoreplies.set(B, message="Bob is back on Monday.")
        await autoreply.on_delivered(cfg, reopened, await mb(reopened, B), A, human(A, B))
        assert len(sink.messages) == 2
    finally:
        await reopened.close()


async def test_interval_expiry_in_store(tmp_path, store):
    bob = await mb(store, B)
    t0, day = time.time(), 86400.0
    assert await store.autoreplies.claim(bob.id, A, "k", t0, 7 * day)
    assert not await store.autoreplies.claim(bob.id, A, "k", t0 + 6.9 * day, 7 * day)
    assert await store.autoreplies.claim(bob.id, A, "k", t0 + 7.1 * day, 7 * day)
    assert await store.autoreplies.claim(bob.id, A, "other-key", t0, 7 * day)


async def test_temporary_failure_is_retried(tmp_path, store, sink, monkeypatch):
    monkeypatch.setattr(send_mod, "BACKOFF_SECONDS", (0.01,))
    cfg = make_cfg(tmp_path, sink.port)
    sink.answers = ["451 4.3.0 try later", "421 4.3.0 busy"]
    await autoreply.on_delivered(cfg, store, await mb(store, B), A, human(A, B))
    assert len(sink.messages) == 1


async def test_failed_send_releases_claim(tmp_path, store, sink, monkeypatch):
    monkeypatch.setattr(send_mod, "BACKOFF_SECONDS", (0.01,))
    bob = await mb(store, B)
    sink.answers = ["451 4.3.0 try later"] * 3  # every attempt fails
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port), store, bob, A, human(A, B))
    assert sink.messages == [] and sink.answers == []
    sink.answers = ["554 5.7.1 no"]  # permanent: not retried
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port), store, bob, A, human(A, B))
    assert sink.messages == [] and sink.answers == []
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port), store, bob, A, human(A, B))
    assert len(sink.messages) == 1


async def test_next_hop_down_never_raises_and_is_bounded(tmp_path, store, sink, monkeypatch):
    monkeypatch.setattr(send_mod, "BACKOFF_SECONDS", (0.01,))
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    bob = await mb(store, B)
    t0 = time.monotonic()
    await autoreply.on_delivered(make_cfg(tmp_path, dead), store, bob, A, human(A, B))
    assert time.monotonic() - t0 < 5
    # the claim was released: with the next hop back, the next message is answered
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port), store, bob, A, human(A, B))
    assert len(sink.messages) == 1


async def test_store_error_never_raises(tmp_path, store, sink):
    bob = await mb(store, B)
    await store.engine.dispose()
    (tmp_path / "mailpolicy.db").unlink()  # every store call now fails
    (tmp_path / "mailpolicy.db").mkdir()
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port), store, bob, A, human(A, B))
    assert sink.messages == []
    (tmp_path / "mailpolicy.db").rmdir()


async def test_forward_only_entry_point_replies(tmp_path, store, sink):
    cfg = make_cfg(tmp_path, sink.port)
    await store.update_mailbox(B, copies_to=("alice@one.example",), no_save=True)
    await autoreply.on_forward_only(cfg, store, await mb(store, B), A, human(A, B))
    assert len(sink.messages) == 1 and sink.messages[0][1] == [A]


async def test_date_window_uses_configured_timezone(tmp_path, store, sink):
    import datetime as dt
    from zoneinfo import ZoneInfo

    tz = "Pacific/Kiritimati"  # UTC+14: often a different date than UTC
    today = dt.datetime.now(ZoneInfo(tz)).date()
    await store.autoreplies.set(B, start=today, end=today)
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port, timezone=tz), store,
                                 await mb(store, B), A, human(A, B))
    assert len(sink.messages) == 1
    await store.autoreplies.set(B, start=today + dt.timedelta(days=1), end=None,
                                  message="new text")
    await autoreply.on_delivered(make_cfg(tmp_path, sink.port, timezone=tz), store,
                                 await mb(store, B), A, human(A, B))
    assert len(sink.messages) == 1


async def test_sender_case_does_not_earn_a_second_reply(tmp_path, store, sink):
    """`BOB@EXAMPLE.NET` and `bob@example.net` are one sender (as in Pigeonhole); the reply
    goes to the envelope sender as written."""
    cfg = make_cfg(tmp_path, sink.port)
    alice = await mb(store, A)
    await autoreply.on_delivered(cfg, store, alice, "Carl@Three.Example", human("c", A))
    await autoreply.on_delivered(cfg, store, alice, "CARL@THREE.EXAMPLE", human("c", A, "2"))
    await autoreply.on_delivered(cfg, store, alice, "carl@three.example", human("c", A, "3"))
    assert [r[1] for r in sink.messages] == [["Carl@Three.Example"]]


async def test_reply_comes_from_the_alias_the_sender_wrote_to(tmp_path, store, sink):
    """Without an explicit from, a message to an alias is answered from that alias (the
    main address stays private); one to the main address from the main address."""
    cfg = make_cfg(tmp_path, sink.port)
    await store.create_mailbox("info@two.example", aliases=("sales", "help"))
    await store.autoreplies.set("info@two.example", enabled=True, message="Closed today.")
    info = await mb(store, "info@two.example")
    await autoreply.on_delivered(cfg, store, info, "x@three.example",
                                 human("x@three.example", "Sales <SALES@two.example>"))
    await autoreply.on_delivered(cfg, store, info, "y@three.example",
                                 human("y@three.example", "info@two.example"))
    froms = [message_from_bytes(d, policy=policy.default)["From"].addresses[0].addr_spec
             for _f, _r, d in sink.messages]
    assert froms == ["sales@two.example", "info@two.example"]
    # an explicit from still wins (bob writes as "Bob B <bob@...>" also to his alias)
    await autoreply.on_delivered(cfg, store, await mb(store, B), "z@three.example",
                                 human("z@three.example", "robert@two.example"))
    last = message_from_bytes(sink.messages[-1][2], policy=policy.default)
    assert last["From"].addresses[0].addr_spec == "bob@two.example"
