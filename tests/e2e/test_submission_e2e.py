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
