"""DMARC end to end through a real Postfix: aligned mail passes with `dmarc=pass`; a spoofed From
with p=reject goes to Junk after-queue and is refused 550 before-queue; a domain with DMARC off
gets the header but normal delivery. DNS comes from an in-process server (a thread)."""

from __future__ import annotations

import asyncio
import smtplib
import sys
import threading
import uuid
from pathlib import Path

import pytest
from harness import Stack, make_message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from test_dkim_verify import make_key, sign
from test_dmarc_zoneserver import ZoneServer

PASSWORD = "correct horse battery staple"
AUTHSERV = "mx.dmarc-e2e.test"


class ThreadDns:
    """The zone server on its own event loop in a daemon thread (the e2e tests are sync)."""

    def __init__(self, zone: dict) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.srv = asyncio.run_coroutine_threadsafe(ZoneServer(zone).start(), self.loop).result(10)

    @property
    def address(self) -> str:
        return self.srv.address

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.srv.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def bank_key():
    return make_key()


@pytest.fixture(scope="module")
def dns(bank_key):
    d = ThreadDns({"s1._domainkey.bank.example": [("TXT", bank_key[1])],
                   "_dmarc.bank.example": [("TXT", "v=DMARC1; p=reject")],
                   "bank.example": [("TXT", "v=spf1 -all")]})
    yield d
    d.close()


def stack_options(dns: ThreadDns, mode: str) -> dict:
    return {"filter_mode": mode,
            "mailpolicy": {"dns": {"nameservers": [dns.address], "timeout_seconds": 2.0},
                           "dmarc": {"authserv_id": AUTHSERV}}}


@pytest.fixture(scope="module")
def after_queue(stack_factory, dns) -> Stack:
    return stack_factory(**stack_options(dns, "after-queue"))


@pytest.fixture(scope="module")
def before_queue(stack_factory, dns) -> Stack:
    return stack_factory(**stack_options(dns, "before-queue"))


async def provision(stack: Stack, dmarc: bool) -> str:
    domain = f"d{uuid.uuid4().hex[:10]}.e2e.test"
    async with stack.store() as store:
        await store.create_domain(domain, dmarc=dmarc)
        await store.create_mailbox(f"alice@{domain}", password=PASSWORD)
    return f"alice@{domain}"


def spoof(to: str) -> bytes:
    return make_message("CEO <ceo@bank.example>", to, f"spoof {uuid.uuid4().hex}", "pay now\n")


async def test_dkim_aligned_message_passes_and_shows_dmarc_pass(after_queue, bank_key):
    rcpt = await provision(after_queue, dmarc=True)
    msg = sign(make_message("Alice <alice@bank.example>", rcpt, "aligned", "hi\n"),
               "bank.example", "s1", bank_key[0])
    assert after_queue.send("bounces@bank.example", rcpt, msg) == {}
    (f,) = after_queue.wait_maildir(rcpt, 1)
    data = f.read_bytes()
    assert f"Authentication-Results: {AUTHSERV};".encode() in data
    unfolded = data.replace(b"\r\n ", b" ").replace(b"\n ", b" ")
    assert b"dmarc=pass (p=reject dis=none) header.from=bank.example" in unfolded
    assert b"X-Mailpolicy-Quarantine" not in data


async def test_spoofed_from_after_queue_goes_to_junk(after_queue):
    rcpt = await provision(after_queue, dmarc=True)
    assert after_queue.send("x@evil.example", rcpt, spoof(rcpt)) == {}
    (f,) = after_queue.wait_maildir(rcpt, 1, folder=".Junk")
    data = f.read_bytes()
    # the disposition applied (quarantine), in the marker and in Authentication-Results
    assert b"X-Mailpolicy-Quarantine: dmarc=fail (p=reject dis=quarantine)" in data
    unfolded = data.replace(b"\r\n ", b" ").replace(b"\n ", b" ")
    assert b"dmarc=fail (p=reject dis=quarantine)" in unfolded
    assert after_queue.messages(rcpt) == []
    after_queue.wait_queue_empty()  # no bounce queued to the forged sender


async def test_dmarc_off_domain_gets_header_and_normal_delivery(after_queue):
    rcpt = await provision(after_queue, dmarc=False)
    assert after_queue.send("x@evil.example", rcpt, spoof(rcpt)) == {}
    (f,) = after_queue.wait_maildir(rcpt, 1)
    data = f.read_bytes()
    assert b"dmarc=fail" in data and b"X-Mailpolicy-Quarantine" not in data


async def test_spoofed_from_before_queue_is_refused_550(before_queue):
    rcpt = await provision(before_queue, dmarc=True)
    with pytest.raises(smtplib.SMTPDataError) as e:
        before_queue.send("x@evil.example", rcpt, spoof(rcpt))
    assert e.value.smtp_code == 550 and b"bank.example" in e.value.smtp_error
    assert before_queue.messages(rcpt) == [] and before_queue.messages(rcpt, ".Junk") == []
