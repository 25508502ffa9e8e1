"""A domain's outbound IP through real Postfix: mail from the domain leaves from that address
(sender-dependent transport → the `mpout-*` smtp transport with smtp_bind_address)."""

from __future__ import annotations

import smtplib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from harness import Stack, free_port, make_message

POOL = ["127.0.0.2", "127.0.0.3"]


class PeerSink:
    """The next hop (Postfix's relayhost): remembers which local address each message came from."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}  # recipient -> client IP

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for rcpt in envelope.rcpt_tos:
            self.seen[rcpt] = session.peer[0]
        return "250 2.0.0 Ok"

    def wait(self, rcpt: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if rcpt in self.seen:
                return self.seen[rcpt]
            time.sleep(0.1)
        raise AssertionError(f"nothing for {rcpt} reached the relay: {self.seen!r}")


@pytest.fixture(scope="module")
def world(stack_factory: Callable[..., Stack]) -> Iterator[tuple[Stack, PeerSink]]:
    sink = PeerSink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield stack_factory(mailpolicy={"outbound": {"ip_pool": POOL}},
                            main_cf={"relayhost": f"[127.0.0.1]:{port}"}), sink
    finally:
        ctl.stop()


async def test_mail_from_a_domain_leaves_from_its_outbound_ip(world) -> None:
    stack, sink = world
    tag = uuid.uuid4().hex[:8]
    fixed, auto = f"fixed{tag}.e2e.test", f"auto{tag}.e2e.test"
    async with stack.store() as store:
        await store.create_domain(fixed, outbound_ip="127.0.0.3")
        chosen = (await store.create_domain(auto, outbound_ip="auto")).outbound_ip
    assert chosen == "127.0.0.2"  # the least used address of the pool
    await stack.settle()
    for domain in (fixed, auto):
        rcpt = f"to-{domain}@elsewhere.example"
        sender = f"bob@{domain}"
        # mail our users send enters through the no-filter smtpd (as submission would)
        with smtplib.SMTP("127.0.0.1", stack.ports["reinject"], timeout=30) as s:
            assert s.sendmail(sender, [rcpt], make_message(sender, rcpt, "outbound")) == {}
    assert sink.wait(f"to-{fixed}@elsewhere.example") == "127.0.0.3"
    assert sink.wait(f"to-{auto}@elsewhere.example") == "127.0.0.2"
