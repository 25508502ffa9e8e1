"""Log in as the mail user: an admin's token is an IMAP password in the real Dovecot (the token
passdb after the password passdb), for its mailbox only, until it expires or is redeemed."""

from __future__ import annotations

import imaplib
import uuid

import pytest
from harness import Stack, make_message

PASSWORD = "correct horse battery staple"


def _domain() -> str:
    return f"d{uuid.uuid4().hex[:10]}.e2e.test"


def _refused(stack: Stack, address: str, password: str) -> None:
    with pytest.raises(imaplib.IMAP4.error):
        stack.imap(address, password).logout()


async def test_token_logs_in_over_imap_and_sees_the_inbox(e2e_stack: Stack) -> None:
    domain = _domain()
    alice, bob = f"alice@{domain}", f"bob@{domain}"
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(alice, password=PASSWORD)
        await store.create_mailbox(bob, password=PASSWORD + " bob")
        token = await store.tokens.create(alice, actor="root")
        bob_token = await store.tokens.create(bob, actor="root")
        audit = await store.list_audit(limit=2)
    assert {(a["action"], a["target"]) for a in audit} == {
        ("mailbox.login_as", alice), ("mailbox.login_as", bob)}

    subject = f"for alice {uuid.uuid4().hex}"
    assert e2e_stack.send("sender@outside.example", alice,
                          make_message("sender@outside.example", alice, subject)) == {}
    e2e_stack.wait_maildir(alice, 1)

    imap = e2e_stack.imap(alice, token)
    try:
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == 1
        typ, fetched = imap.fetch(b"1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and subject.encode() in fetched[0][1]
    finally:
        imap.logout()

    e2e_stack.imap(alice, PASSWORD).logout()  # the mailbox's own password still works
    e2e_stack.imap(alice, token).logout()  # over IMAP: usable again until it expires
    _refused(e2e_stack, alice, token + "x")  # a wrong token
    _refused(e2e_stack, alice, bob_token)  # another mailbox's token
    _refused(e2e_stack, bob, token)
    e2e_stack.imap(bob, bob_token).logout()

    async with e2e_stack.store() as store:  # redeemed once through the admin API: spent
        assert (await store.tokens.consume(token)).address == alice
    _refused(e2e_stack, alice, token)
    e2e_stack.imap(alice, PASSWORD).logout()


async def test_expired_and_disabled_mailbox_tokens_are_refused(e2e_stack: Stack) -> None:
    domain = _domain()
    carol, dave, erin = f"carol@{domain}", f"dave@{domain}", f"erin@{domain}"
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(carol, password=PASSWORD)
        await store.create_mailbox(dave, password=PASSWORD)
        await store.create_mailbox(erin)  # no password of its own
        expired = await store.tokens.create(carol, ttl=-1)
        disabled = await store.tokens.create(dave)
        await store.update_mailbox(dave, enabled=False)
        erin_token = await store.tokens.create(erin)
    _refused(e2e_stack, carol, expired)
    _refused(e2e_stack, dave, disabled)
    _refused(e2e_stack, dave, PASSWORD)
    e2e_stack.imap(carol, PASSWORD).logout()
    # a mailbox without a password can still be entered by an admin
    e2e_stack.imap(erin, erin_token).logout()
    _refused(e2e_stack, erin, "")
