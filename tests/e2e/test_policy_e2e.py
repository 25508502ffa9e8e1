"""Policy service and socketmap tables through a real Postfix (SMTP dialogue against smtpd)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
from harness import Stack

from mailpolicy.core.outbound import transport_name

REJECT_TEXT = "Recipient address rejected: mailbox does not exist"
SENDER = "someone@outside.example"


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Iterator[Stack]:
    yield stack_factory(dovecot=False)


@pytest.fixture(scope="module")
def domains(stack: Stack) -> dict[str, str]:
    """A reject domain with mailboxes, and a discard domain (names unique to this module)."""
    import asyncio

    tag = uuid.uuid4().hex[:8]
    names = {"reject": f"r{tag}.e2e.test", "discard": f"k{tag}.e2e.test"}

    async def provision() -> None:
        async with stack.store() as store:
            await store.create_domain(names["reject"], outbound_ip="127.0.0.1")
            await store.create_domain(names["discard"], default_action="discard")
            await store.create_mailbox(f"info@{names['reject']}", aliases=["sales"])
            await store.create_mailbox(f"small@{names['reject']}", max_size="1K")
            await store.create_mailbox(f"off@{names['reject']}", enabled=False)

    asyncio.run(provision())
    asyncio.run(stack.settle())
    return names


def rcpt(stack: Stack, recipient: str, size: int | None = None) -> tuple[int, str]:
    """MAIL FROM (with SIZE= when given) and one RCPT TO against Postfix's smtpd."""
    with stack.smtp() as s:
        code, msg = s.mail(SENDER, [f"SIZE={size}"] if size is not None else [])
        assert code == 250, (code, msg, stack.diagnose())
        code, msg = s.rcpt(recipient)
        s.rset()
        return code, msg.decode()


def test_existing_mailbox_alias_and_extension_are_accepted(stack, domains):
    d = domains["reject"]
    for address in (f"info@{d}", f"Sales@{d}", f"info+tag@{d.upper()}"):
        code, msg = rcpt(stack, address)
        assert code == 250, (address, code, msg, stack.diagnose())


def test_unknown_in_reject_domain_gets_our_550_at_rcpt(stack, domains):
    address = f"nobody@{domains['reject']}"
    code, msg = rcpt(stack, address)
    assert code == 550, (code, msg)
    assert msg == f"5.1.1 <{address}>: {REJECT_TEXT}"


def test_unknown_in_discard_domain_is_accepted(stack, domains):
    code, msg = rcpt(stack, f"whoever@{domains['discard']}")
    assert code == 250, (code, msg, stack.diagnose())


def test_disabled_mailbox_gets_550_521(stack, domains):
    code, msg = rcpt(stack, f"off@{domains['reject']}")
    assert code == 550, (code, msg)
    assert msg == (f"5.2.1 <off@{domains['reject']}>: Recipient address rejected: "
                   "Mailbox disabled, not accepting messages")


def test_over_quota_gets_552_when_size_is_announced(stack, domains):
    address = f"small@{domains['reject']}"
    code, msg = rcpt(stack, address, size=5000)
    assert code == 552, (code, msg)
    assert msg == f"5.2.2 <{address}>: Recipient address rejected: Mailbox is full"
    code, msg = rcpt(stack, address, size=500)  # fits
    assert code == 250, (code, msg)


def test_other_domains_are_refused_as_relay(stack, domains):
    code, msg = rcpt(stack, "someone@elsewhere.example")
    assert code == 554 and "Relay access denied" in msg, (code, msg)


def postmap(stack: Stack, name: str, key: str) -> str | None:
    port = stack.ports["socketmap"]
    res = subprocess.run(["/usr/sbin/postmap", "-c", str(stack.postfix.config_dir), "-q", key,
                          f"socketmap:inet:127.0.0.1:{port}:{name}"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode == 1 and not res.stdout:
        return None  # not found
    assert res.returncode == 0, (name, key, res.returncode, res.stdout, res.stderr)
    return res.stdout.strip()


def test_postmap_queries_the_socketmap_tables(stack, domains):
    r, k = domains["reject"], domains["discard"]
    assert postmap(stack, "domains", r) == r
    assert postmap(stack, "domains", r.upper()) == r
    assert postmap(stack, "domains", "elsewhere.example") is None
    assert postmap(stack, "mailboxes", f"info@{r}") == f"info@{r}"
    assert postmap(stack, "mailboxes", f"sales+x@{r}") == f"info@{r}"
    assert postmap(stack, "mailboxes", f"nobody@{r}") is None
    assert postmap(stack, "mailboxes", f"nobody@{k}") == f"nobody@{k}"
    assert postmap(stack, "mailboxes", f"@{k}") is None
    assert postmap(stack, "sender-transport", f"info@{r}") == f"{transport_name('127.0.0.1')}:"
    assert postmap(stack, "sender-transport", "a@elsewhere.example") is None


def test_with_mailpolicy_stopped_postfix_answers_4xx(stack, domains):
    """Runs last in this module: it stops the daemon (and starts it again)."""
    stack.mailpolicy.stop()
    try:
        for address in (f"info@{domains['reject']}", f"nobody@{domains['reject']}",
                        f"x@{domains['discard']}"):
            code, msg = rcpt(stack, address)
            assert 400 <= code < 500, (address, code, msg)
    finally:
        stack.mailpolicy.start()
    code, msg = rcpt(stack, f"info@{domains['reject']}")
    assert code == 250, (code, msg, stack.diagnose())
