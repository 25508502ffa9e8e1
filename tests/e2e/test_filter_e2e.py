"""The content filter through real Postfix and Dovecot: aliases, copies, default actions."""

from __future__ import annotations

import asyncio
import smtplib
import time
import uuid
from collections.abc import Callable

import pytest
from harness import Stack, World, make_message, with_remote_mx

from mailpolicy.core.srs import Srs

EXT = "remote-mx.e2e.test"  # an "external" domain: Postfix routes it to the sink below


def _domain() -> str:
    return f"f{uuid.uuid4().hex[:10]}.e2e.test"


def _send(stack: Stack, rcpt: str, subject: str, sender: str = "sender@outside.example") -> None:
    assert stack.send(sender, rcpt, make_message(sender, rcpt, subject)) == {}


async def test_alias_and_copies_to_local_and_external(world: World) -> None:
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"dave@{d}")  # a local copy target must exist first
        await store.create_mailbox(f"bob@{d}", aliases=["info"],
                                   copies_to=["dave", f"bob-copy@{EXT}"])
    await stack.settle()
    subject = f"alias {uuid.uuid4().hex}"
    _send(stack, f"info@{d}", subject)
    [bob] = stack.wait_maildir(f"bob@{d}", 1)
    [dave] = stack.wait_maildir(f"dave@{d}", 1)
    assert subject.encode() in bob.read_bytes() and subject.encode() in dave.read_bytes()
    sender, rcpts, data = world.remote.wait(f"bob-copy@{EXT}")
    assert rcpts == [f"bob-copy@{EXT}"] and subject.encode() in data
    assert sender.startswith("SRS0=")  # SPF-safe envelope sender for the external copy
    assert Srs.from_config(stack.cfg).reverse(sender) == "sender@outside.example"
    stack.wait_queue_empty()


async def test_do_not_save_only_the_copy_arrives(world: World) -> None:
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"keeper@{d}")
        await store.create_mailbox(f"away@{d}", copies_to=[f"away-copy@{EXT}", "keeper"],
                                   no_save=True)
    await stack.settle()
    _send(stack, f"away@{d}", "do not save")
    world.remote.wait(f"away-copy@{EXT}")
    stack.wait_maildir(f"keeper@{d}", 1)
    stack.wait_queue_empty()
    assert stack.messages(f"away@{d}") == []


async def test_discard_domain_delivers_nothing_and_bounces_nothing(world: World) -> None:
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d, default_action="discard")
        await store.create_mailbox(f"real@{d}")
    await stack.settle()
    tag = uuid.uuid4().hex
    _send(stack, f"nobody-{tag}@{d}", "discard me")
    stack.wait_queue_empty()
    assert not (stack.cfg.maildir_root / d / f"nobody-{tag}").exists()
    assert stack.messages(f"real@{d}") == []
    assert "status=bounced" not in stack.postfix.log()


async def test_redirect_and_redirect_domain(world: World) -> None:
    stack, target, red, rdom = world.stack, _domain(), _domain(), _domain()
    async with stack.store() as store:
        await store.create_domain(target)
        await store.create_mailbox(f"boss@{target}")
        await store.create_mailbox(f"carol@{target}", aliases=["sales"])
        await store.create_domain(red, default_action="redirect", redirect_to=f"boss@{target}")
        await store.create_domain(rdom, default_action="redirect-domain", redirect_to=target)
    await stack.settle()
    _send(stack, f"anyone@{red}", "to the boss")
    _send(stack, f"sales@{rdom}", "same local part, alias there")
    stack.wait_maildir(f"boss@{target}", 1)
    stack.wait_maildir(f"carol@{target}", 1)
    stack.wait_queue_empty()


async def test_two_mailbox_forwarding_loop_ends(world: World) -> None:
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"ping@{d}")
        await store.create_mailbox(f"pong@{d}", copies_to=["ping"])
        await store.update_mailbox(f"ping@{d}", copies_to=["pong"])
    await stack.settle()
    _send(stack, f"ping@{d}", "loop")
    stack.wait_maildir(f"ping@{d}", 1)
    stack.wait_maildir(f"pong@{d}", 1)
    stack.wait_queue_empty()
    await asyncio.sleep(1)
    assert len(stack.messages(f"ping@{d}")) == 1 and len(stack.messages(f"pong@{d}")) == 1


async def test_xforward_reaches_the_filter(world: World) -> None:
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"x@{d}")
    await stack.settle()
    _send(stack, f"x@{d}", "xforward")
    [msg] = stack.wait_maildir(f"x@{d}", 1)
    assert b"X-Mailpolicy-Trace: by " in msg.read_bytes()
    # the filter saw the original client's identity (XFORWARD HELO), not only its own peer
    lines = [ln for ln in stack.mailpolicy.logfile.read_text(errors="replace").splitlines()
             if "filter.message" in ln and f"x@{d}" in ln]
    assert lines and "helo='client.e2e.test'" in lines[0] and "client='127.0.0.1'" in lines[0]


def test_before_queue_mode_delivers_and_answers_in_session(
        stack_factory: Callable[..., Stack]) -> None:
    """Before the queue too: the local mailbox gets the message and the external copy goes
    through the routed reinjection smtpd of the domain's outbound IP."""
    d = _domain()
    with with_remote_mx(lambda **kw: stack_factory(filter_mode="before-queue", **kw),
                        EXT) as (stack, remote):
        async def provision() -> None:
            async with stack.store() as store:
                await store.create_domain(d)
                await store.create_mailbox(f"bob@{d}", aliases=["info"],
                                           copies_to=[f"bq-copy@{EXT}"])

        asyncio.run(provision())
        time.sleep(1)
        _send(stack, f"info@{d}", "before queue")
        stack.wait_maildir(f"bob@{d}", 1)
        remote.wait(f"bq-copy@{EXT}")
        stack.wait_queue_empty()
        # pool 127.0.0.1: its routed smtpd took the copy (user mail never passes there)
        stack.wait_log("postfix/mpout-127-0-0-1-reinject/smtpd")


async def test_bounce_to_an_srs_address_goes_back_to_the_original_sender(world: World) -> None:
    """A remote MX that cannot deliver a forwarded copy bounces to our SRS sender: Postfix
    must accept it (socketmap: the SRS domain and valid SRS addresses are ours) and the filter
    hands it back to the original sender. A forged SRS address is refused at RCPT."""
    stack = world.stack
    srs = Srs.from_config(stack.cfg)
    original = f"orig-{uuid.uuid4().hex[:8]}@{EXT}"
    srs_address = srs.forward(original)
    assert srs_address is not None
    bounce = (f"From: MAILER-DAEMON@{EXT}\r\nTo: {srs_address}\r\nSubject: Undelivered\r\n"
              "Auto-Submitted: auto-replied\r\n\r\nbounce\r\n")
    assert stack.send("", srs_address, bounce) == {}
    sender, rcpts, data = world.remote.wait(original)
    assert rcpts == [original] and sender in ("", "<>") and b"Undelivered" in data
    forged = f"SRS0=AAAA=ZZ={EXT}=someone@{srs.domain}"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        stack.send("", forged, bounce)
