"""Outgoing mail through the private Postfix + Dovecot: authenticated submission on 587
(STARTTLS) and 465 (implicit TLS) with Dovecot SASL, the login-as token refused for SMTP AUTH."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator

import pytest
from harness import RemoteMX, Stack, make_message, with_remote_mx

PASSWORD = "correct horse battery staple"
EXT = "outside-submission.example"


@pytest.fixture(scope="module")
def world(stack_factory) -> Iterator[tuple[Stack, RemoteMX]]:
    with with_remote_mx(stack_factory, EXT) as (stack, remote):
        yield stack, remote


def _domain() -> str:
    return f"s{uuid.uuid4().hex[:10]}.e2e.test"


async def test_authenticated_user_sends_on_587_and_465(world) -> None:
    stack, remote = world
    domain = _domain()
    alice = f"alice@{domain}"
    async with stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(alice, password=PASSWORD)
    await stack.settle()
    for implicit in (False, True):
        rcpt = f"to-{uuid.uuid4().hex[:8]}@{EXT}"
        with stack.submit(alice, PASSWORD, implicit_tls=implicit) as s:
            assert s.sendmail(alice, [rcpt], make_message(alice, rcpt, "submitted")) == {}
        sender, _rcpts, content = remote.wait(rcpt)
        assert sender == alice
        assert b"Subject: submitted" in content
    # a wrong password is refused; without AUTH nothing is relayed
    with pytest.raises(smtplib.SMTPAuthenticationError):
        stack.submit(alice, PASSWORD + "x").close()


async def test_login_as_token_is_for_imap_only(world) -> None:
    stack, _remote = world
    domain = _domain()
    bob = f"bob@{domain}"
    async with stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(bob, password=PASSWORD)
        token = await store.tokens.create(bob, actor="root")
    await stack.settle()
    stack.imap(bob, token).logout()  # IMAP: the token works
    for implicit in (False, True):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            stack.submit(bob, token, implicit_tls=implicit).close()
    stack.submit(bob, PASSWORD).close()  # the mailbox's own password works for SMTP


async def test_a_user_sends_as_its_aliases_and_grants_only(world) -> None:
    stack, remote = world
    domain = _domain()
    carol, dave = f"carol@{domain}", f"dave@{domain}"
    async with stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(carol, password=PASSWORD, aliases=["sales"])
        await store.create_mailbox(dave, password=PASSWORD)
        await store.sending.set_grants(carol, [f"@{EXT}"])
    await stack.settle()
    rcpt = f"to-{uuid.uuid4().hex[:8]}@{EXT}"
    with stack.submit(carol, PASSWORD) as s:
        # another mailbox's address: refused (reject_sender_login_mismatch, at RCPT as
        # smtpd_delay_reject has it)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            s.sendmail(dave, [rcpt], make_message(dave, rcpt))
        code, text = refused.value.recipients[rcpt]
        assert code == 553 and text.startswith(b"5.7.1") and b"not owned by user" in text
        # the alias (and its +ext form) and a granted address work
        for sender in (f"sales@{domain}", f"sales+news@{domain}", f"carol.x@{EXT}"):
            assert s.sendmail(sender, [rcpt], make_message(sender, rcpt, sender)) == {}
        # an owned envelope sender with another mailbox's From header: 553 from the filter
        with pytest.raises(smtplib.SMTPDataError) as refused_data:
            s.sendmail(carol, [rcpt], make_message(dave, rcpt, "forged from"))
        assert refused_data.value.smtp_code == 553
        assert b"5.7.1" in refused_data.value.smtp_error
    got = {m[0] for m in remote.for_rcpt(rcpt)}
    assert got == {f"sales@{domain}", f"sales+news@{domain}", f"carol.x@{EXT}"}
    assert not any(b"forged from" in m[2] for m in remote.messages)


async def test_send_limit_defers_after_the_limit(world) -> None:
    stack, remote = world
    domain = _domain()
    erin = f"erin@{domain}"
    async with stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(erin, password=PASSWORD)
        await store.sending.set_limits(erin, messages_per_hour=2)
    await stack.settle()
    rcpt = f"limited-{uuid.uuid4().hex[:8]}@{EXT}"
    with stack.submit(erin, PASSWORD) as s:
        for i in range(2):
            assert s.sendmail(erin, [rcpt], make_message(erin, rcpt, f"n{i}")) == {}
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            s.sendmail(erin, [rcpt], make_message(erin, rcpt, "n2"))
    assert deferred.value.smtp_code == 450
    assert b"4.7.1" in deferred.value.smtp_error
    assert b"limit of 2 messages per hour" in deferred.value.smtp_error
    remote.wait(rcpt)
