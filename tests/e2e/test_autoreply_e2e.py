"""The autoresponder through real Postfix: one reply with attachment, envelope <>, no repeats."""

from __future__ import annotations

import asyncio
import uuid
from email import message_from_bytes, policy

from harness import Stack, World, make_message

from mailpolicy.core.model import Attachment

EXT = "remote-ar.e2e.test"  # the outside senders' domain: Postfix routes it to the sink


async def _setup(stack: Stack, pdf: bytes) -> str:
    d = f"ar{uuid.uuid4().hex[:10]}.e2e.test"
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"bob@{d}")
        await store.autoreplies.set(f"bob@{d}", enabled=True, subject="Out of office",
                                      message="Bob is away until Monday. Grüße",
                                      attachment=Attachment("away.pdf", "application/pdf", pdf))
    await stack.settle()
    return f"bob@{d}"


async def test_one_reply_with_attachment_then_none(world: World) -> None:
    stack, remote = world.stack, world.remote
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 20
    bob = await _setup(stack, pdf)
    alice, carol = f"alice.{uuid.uuid4().hex[:6]}@{EXT}", f"carol.{uuid.uuid4().hex[:6]}@{EXT}"

    first = make_message(alice, bob, "first")
    assert stack.send(alice, bob, first) == {}
    mail_from, rcpts, data = remote.wait(alice)
    assert mail_from == "<>" and rcpts == [alice]
    reply = message_from_bytes(data, policy=policy.default)
    assert reply["To"] == alice and reply["From"] == bob
    assert reply["Subject"] == "Out of office"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Precedence"] == "bulk" and reply["X-Auto-Response-Suppress"] == "All"
    msgid = message_from_bytes(first)["Message-ID"]
    assert reply["In-Reply-To"] == msgid and reply["References"] == msgid
    assert reply.get_content_type() == "multipart/mixed"
    text, att = list(reply.iter_parts())
    assert "Bob is away until Monday. Grüße" in text.get_content()
    assert (att.get_filename(), att.get_content_type(), att.get_content()) == (
        "away.pdf", "application/pdf", pdf)

    # the same sender again within the interval, and a list message from another sender
    assert stack.send(alice, bob, make_message(alice, bob, "second")) == {}
    assert stack.send(carol, bob, make_message(carol, bob, "list", extra_headers={
        "Precedence": "list"})) == {}
    stack.wait_maildir(bob, 3)
    # a control message: once its reply arrived, the earlier ones had their chance
    dave = f"dave.{uuid.uuid4().hex[:6]}@{EXT}"
    assert stack.send(dave, bob, make_message(dave, bob, "control")) == {}
    remote.wait(dave)
    stack.wait_queue_empty()
    await asyncio.sleep(1.0)
    assert len(remote.for_rcpt(alice)) == 1, stack.diagnose()
    assert remote.for_rcpt(carol) == [], stack.diagnose()
    assert len(remote.for_rcpt(dave)) == 1
