"""Issue #13 through the private Postfix: nothing accepted that cannot be delivered, nothing
bounced to a possibly forged sender. The sender lives at the remote-MX stand-in, so a bounce
would arrive there; every test also checks Postfix's log and queue for one."""

from __future__ import annotations

import asyncio
import uuid
from email import message_from_bytes, policy

import pytest
from harness import Stack, World, make_message

EXT = "sender-mx.e2e.test"  # the senders' domain: Postfix routes it to the RemoteMX sink
SENDER = f"alice@{EXT}"


def _domain() -> str:
    return f"n{uuid.uuid4().hex[:10]}.e2e.test"


def _no_bounce(world: World) -> None:
    """No bounce was generated: none queued, none logged, none at the sender's MX."""
    stack = world.stack
    stack.wait_queue_empty()
    log = stack.postfix.log()
    assert "status=bounced" not in log and "sender non-delivery notification" not in log, (
        stack.diagnose())
    assert not [m for m in world.remote.messages if b"Undelivered Mail" in m[2]
                or b"MAILER-DAEMON" in m[2]], world.remote.messages


def _session(stack: Stack, rcpts: list[str], message: bytes, size: int | None = None,
             ) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """One SMTP transaction against Postfix's smtpd, with SIZE= only when given: the RCPT
    replies and the reply at the end of data (None when no recipient was accepted)."""
    with stack.smtp() as s:
        code, msg = s.mail(SENDER, [f"SIZE={size}"] if size is not None else [])
        assert code == 250, (code, msg, stack.diagnose())
        at_rcpt = [s.rcpt(r) for r in rcpts]
        if not any(c == 250 for c, _ in at_rcpt):
            s.rset()
            return at_rcpt, None
        return at_rcpt, s.data(message)


async def test_redirect_domain_refuses_names_the_target_lacks(world: World) -> None:
    """redirect-domain: a name that exists in the target is delivered there; one that does
    not is refused at RCPT (550 5.1.1), never accepted and then bounced by LMTP."""
    stack, target, old = world.stack, _domain(), _domain()
    async with stack.store() as store:
        await store.create_domain(target)
        await store.create_mailbox(f"bob@{target}")
        await store.create_domain(old, default_action="redirect-domain", redirect_to=target)
    await stack.settle()
    at_rcpt, end = _session(stack, [f"ghost@{old}", f"bob@{old}"],
                            make_message(SENDER, f"bob@{old}", "redirect-domain"))
    assert at_rcpt[0][0] == 550 and at_rcpt[0][1].startswith(b"5.1.1"), at_rcpt
    assert at_rcpt[1][0] == 250 and end is not None and end[0] == 250, (at_rcpt, end)
    stack.wait_maildir(f"bob@{target}", 1)
    _no_bounce(world)


async def test_postmaster_and_abuse_reach_the_domain_postmaster(world: World) -> None:
    """Every hosted domain, reject domains too, accepts postmaster@ and abuse@ (RFC 5321
    4.5.1, RFC 2142): to the first mailbox, unless an explicit mailbox/alias has the name."""
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)  # default action: reject
        await store.create_mailbox(f"owner@{d}")  # the first mailbox: the postmaster
        await store.create_mailbox(f"desk@{d}", aliases=["abuse"])
    await stack.settle()
    at_rcpt, end = _session(stack, [f"Postmaster@{d}", f"abuse@{d}", f"nobody@{d}"],
                            make_message(SENDER, f"postmaster@{d}", "role addresses"))
    assert [c for c, _ in at_rcpt] == [250, 250, 550], at_rcpt
    assert end is not None and end[0] == 250
    stack.wait_maildir(f"owner@{d}", 1)
    stack.wait_maildir(f"desk@{d}", 1)
    _no_bounce(world)


async def test_full_mailbox_is_refused_in_session_with_or_without_size(world: World) -> None:
    """With SIZE= the policy refuses at RCPT; without it, at the end of data (Postfix knows
    the size there): 552 in the sender's session either way, no bounce; what fits arrives."""
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"small@{d}", max_size="20K")
    await stack.settle()
    rcpt = f"small@{d}"
    big = make_message(SENDER, rcpt, "too big", "x" * 60 + "\n" * 1 + ("y" * 70 + "\n") * 400)
    at_rcpt, end = _session(stack, [rcpt], big, size=len(big))
    assert at_rcpt[0][0] == 552 and end is None, at_rcpt
    at_rcpt, end = _session(stack, [rcpt], big)  # no SIZE=: accepted at RCPT ...
    assert at_rcpt[0][0] == 250, at_rcpt
    assert end is not None and end[0] == 552 and b"5.2.2" in end[1], end  # ... refused at end
    fits = make_message(SENDER, rcpt, "fits", "short\n")
    at_rcpt, end = _session(stack, [rcpt], fits)
    assert end is not None and end[0] == 250, (at_rcpt, end)
    stack.wait_maildir(rcpt, 1)
    _no_bounce(world)
    assert len(stack.messages(rcpt)) == 1


async def test_autoreply_once_per_sender_whatever_case_and_from_the_alias(
        world: World) -> None:
    """Two messages from `BOB@…` and `bob@…` to an alias: one auto-reply, From the alias."""
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"info@{d}", aliases=["sales"])
        await store.autoreplies.set(f"info@{d}", enabled=True, message="Closed today.")
    await stack.settle()
    for sender in (f"BOB@{EXT.upper()}", f"bob@{EXT}"):
        assert stack.send(sender, f"sales@{d}",
                          make_message(sender, f"sales@{d}", "hello")) == {}
    stack.wait_maildir(f"info@{d}", 2)
    stack.wait_queue_empty()
    await asyncio.sleep(1)  # a second reply, if any, would be queued by now
    stack.wait_queue_empty()
    replies = [m for m in world.remote.messages if b"Auto-Submitted: auto-replied" in m[2]]
    assert len(replies) == 1, (world.remote.messages, stack.diagnose())
    _, rcpts, data = replies[0]
    assert [r.lower() for r in rcpts] == [f"bob@{EXT}"]
    reply = message_from_bytes(data, policy=policy.default)
    assert reply["From"].addresses[0].addr_spec == f"sales@{d}", reply["From"]


async def test_store_change_after_rcpt_defers_and_then_delivers(world: World) -> None:
    """Accepted at RCPT, the mailbox gone before the filter ran: the filter answers 4xx, so
    Postfix keeps the message (deferred, not bounced, not dropped). Once the address exists
    again, the retry delivers it."""
    stack, d = world.stack, _domain()
    async with stack.store() as store:
        await store.create_domain(d)
        await store.create_mailbox(f"keep@{d}")
        await store.create_mailbox(f"gone@{d}")
    await stack.settle()
    subject = f"store changed {uuid.uuid4().hex}"
    with stack.smtp() as s:
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt(f"gone@{d}")[0] == 250
        async with stack.store() as store:
            await store.delete_mailbox(f"gone@{d}")
        await stack.settle()
        code, _ = s.data(make_message(SENDER, f"gone@{d}", subject))
        assert code == 250  # queued: the filter decides after the queue
    stack.wait_log("has no destination now")
    assert stack.postfix.queue_files() == 1 and "status=bounced" not in stack.postfix.log()
    async with stack.store() as store:
        await store.create_mailbox(f"gone@{d}")
    await stack.settle()
    stack.postfix.postfix("flush")
    [msg] = stack.wait_maildir(f"gone@{d}", 1, timeout=60)
    assert subject.encode() in msg.read_bytes()
    _no_bounce(world)


@pytest.fixture(autouse=True)
def _fresh_remote(world: World) -> None:
    world.remote.messages.clear()
