"""First end-to-end tests: Postfix → mailpolicy → Maildir → Dovecot IMAP, and postfix-config."""

from __future__ import annotations

import imaplib
import subprocess
import uuid
from collections.abc import Callable

import pytest
from harness import Stack, make_message, plain_postfix_main_cf

PASSWORD = "correct horse battery staple"


def _domain() -> str:
    return f"d{uuid.uuid4().hex[:10]}.e2e.test"


async def test_message_lands_in_maildir_and_is_readable_over_imap(e2e_stack: Stack) -> None:
    domain = _domain()
    address = f"alice@{domain}"
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(address, password=PASSWORD)

    subject = f"hello {uuid.uuid4().hex}"
    msg = make_message("sender@outside.example", address, subject, "first line\nsecond line\n")
    refused = e2e_stack.send("sender@outside.example", address, msg)
    assert refused == {}

    files = e2e_stack.wait_maildir(address, 1)
    assert len(files) == 1
    on_disk = files[0].read_bytes()
    assert subject.encode() in on_disk
    assert b"second line" in on_disk
    e2e_stack.wait_queue_empty()

    imap = e2e_stack.imap(address, PASSWORD)
    try:
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == 1
        typ, fetched = imap.fetch(b"1", "(BODY.PEEK[])")
        assert typ == "OK"
        body = fetched[0][1]
        assert subject.encode() in body
        assert b"first line\r\nsecond line\r\n" in body
    finally:
        imap.logout()


async def test_wrong_password_is_refused_over_imap(e2e_stack: Stack) -> None:
    domain = _domain()
    address = f"bob@{domain}"
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(address, password=PASSWORD)

    with pytest.raises(imaplib.IMAP4.error):
        e2e_stack.imap(address, PASSWORD + "x")
    with pytest.raises(imaplib.IMAP4.error):
        e2e_stack.imap(f"nobody@{domain}", PASSWORD)
    e2e_stack.imap(address.upper(), PASSWORD).logout()  # the right one still works


async def test_disabled_mailbox_cannot_log_in(e2e_stack: Stack) -> None:
    domain = _domain()
    address = f"carol@{domain}"
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(address, password=PASSWORD, enabled=False)
    with pytest.raises(imaplib.IMAP4.error):
        e2e_stack.imap(address, PASSWORD)


def test_postconf_accepts_the_postfix_config_output_without_warnings(e2e_stack: Stack) -> None:
    """The running instance's config = base + exactly `mailpolicy postfix-config --json`."""
    assert e2e_stack.notes == []  # the CLI verb itself produced the fragments
    conf = str(e2e_stack.postfix.config_dir)
    for args in (["-n"], ["-M"], ["-P"]):
        res = subprocess.run(["/usr/sbin/postconf", "-c", conf, *args], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stderr == "", f"postconf {args} warned:\n{res.stderr}"
    active = subprocess.run(["/usr/sbin/postconf", "-c", conf, "-n"], capture_output=True,
                            text=True, timeout=30).stdout
    for key, value in e2e_stack.postfix.fragments["main_cf"].items():
        assert f"{key} = {value}" in active
    config_warnings = [ln for ln in e2e_stack.postfix.log().splitlines()
                       if "warning:" in ln and (".cf" in ln or "parameter" in ln)]
    assert config_warnings == []  # the running daemons did not complain either


def test_relay_to_a_foreign_domain_is_refused(e2e_stack: Stack) -> None:
    with e2e_stack.smtp() as s:
        s.mail("sender@outside.example")
        code, text = s.rcpt("someone@not-ours.example")
    assert code == 554 and b"Relay access denied" in text


async def test_dovecot_and_mailpolicy_count_the_same_quota_bytes(e2e_stack: Stack) -> None:
    from mailpolicy.maildir import usage

    domain = _domain()
    address = f"quota@{domain}"
    limit = 2 * 1024**2
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(address, password=PASSWORD, max_size=limit)
    for i in range(3):
        body = ("x" * 70 + "\n") * (20 + 37 * i)
        e2e_stack.send("sender@outside.example", address,
                       make_message("sender@outside.example", address, f"q{i}", body))
    e2e_stack.wait_maildir(address, 3)
    maildir = e2e_stack.maildir(address)
    ours = usage.current_usage(maildir, limit)
    assert ours[1] == 3

    imap = e2e_stack.imap(address, PASSWORD)
    try:
        typ, data = imap.getquotaroot("INBOX")
    finally:
        imap.logout()
    assert typ == "OK"
    used_kib, limit_kib = (int(x) for x in data[1][0].decode().rsplit("(", 1)[1]
                           .rstrip(")").split()[1:3])
    assert limit_kib == limit // 1024  # Dovecot's limit is the mailbox's max size
    assert used_kib in (ours[0] // 1024, -(-ours[0] // 1024))

    # Dovecot recounts the Maildir itself and rewrites maildirsize: the same bytes and count
    e2e_stack.doveadm("quota", "recalc", "-u", address)
    lines = (maildir / "maildirsize").read_text().split("\n")
    assert lines[0] == f"{limit}S"
    totals = [tuple(int(v) for v in ln.split()) for ln in lines[1:] if ln.strip()]
    assert (sum(t[0] for t in totals), sum(t[1] for t in totals)) == ours


async def test_mail_deleted_over_imap_frees_quota_for_the_policy_service(e2e_stack: Stack) -> None:
    """Usage stays exact after a user deletes mail through Dovecot: Dovecot's quota=maildir
    appends the negative delta to the same maildirsize, and the RCPT-time quota check of the
    policy service sees the room again."""
    import asyncio

    domain = _domain()
    address = f"full@{domain}"
    limit = 12 * 1024
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(address, password=PASSWORD, max_size=limit)
    await e2e_stack.settle()
    for i in range(2):
        body = "y" * 4000 + "\n"
        e2e_stack.send("sender@outside.example", address,
                       make_message("sender@outside.example", address, f"big{i}", body))
    e2e_stack.wait_maildir(address, 2)
    maildir = e2e_stack.maildir(address)

    def rcpt_with_size(size: int) -> int:
        with e2e_stack.smtp() as s:
            s.mail("sender@outside.example", [f"SIZE={size}"])
            return s.rcpt(address)[0]

    await asyncio.sleep(0.6)  # the policy service reuses a usage answer for 0.5 s
    assert rcpt_with_size(5000) == 552  # 2 × ~4 KB stored + 5000 would pass 12 KiB

    imap = e2e_stack.imap(address, PASSWORD)
    try:
        imap.select("INBOX")
        imap.store(b"1", "+FLAGS", "\\Deleted")
        imap.expunge()
    finally:
        imap.logout()
    await asyncio.sleep(0.6)  # the policy service reuses a usage answer for 0.5 s
    assert rcpt_with_size(5000) == 250
    # read-only look (as root we must not rewrite the daemon's maildirsize): one message left
    lines = (maildir / "maildirsize").read_text().split("\n")[1:]
    totals = [tuple(int(v) for v in ln.split()) for ln in lines if ln.strip()]
    assert sum(t[1] for t in totals) == 1
    assert sum(t[0] for t in totals) == sum(p.stat().st_size for p in maildir.glob("*/*,S=*"))


async def test_plain_postfix_delivers_through_dovecot_lmtp(
        stack_factory: Callable[..., Stack]) -> None:
    """The benchmarks' peer (Options.dovecot_lmtp + plain_postfix_main_cf): Postfix with no
    mailpolicy in the path hands the message to Dovecot's LMTP, which stores it in the same
    Maildir layout, readable over IMAP."""
    address = f"plain@{_domain()}"
    stack = stack_factory(dovecot_lmtp=True, main_cf=plain_postfix_main_cf([address]))
    async with stack.store() as store:  # Dovecot's userdb
        await store.create_domain(address.split("@")[1])
        await store.create_mailbox(address, password=PASSWORD)
    subject = f"plain {uuid.uuid4().hex}"
    assert stack.send("sender@outside.example", address,
                      make_message("sender@outside.example", address, subject)) == {}
    assert subject.encode() in stack.wait_maildir(address, 1)[0].read_bytes()
    sent = stack.wait_log("status=sent")
    assert "dovecot-lmtp" in sent and address in sent, sent
    assert "mailpolicy-filter" not in stack.postfix.log()
    imap = stack.imap(address, PASSWORD)
    try:
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == 1
    finally:
        imap.logout()
