"""Golden transcripts: policy request bytes in, reply bytes out, for every rule."""

from __future__ import annotations

import asyncio

import pytest
from memdir import MemoryDirectory

from mailpolicy import config
from mailpolicy.core.model import DefaultAction, Domain, Mailbox
from mailpolicy.policy.protocol import Parser, encode_action
from mailpolicy.policy.server import PolicyService

DIRECTORY = MemoryDirectory(
    [Domain("example.com"), Domain("discard.example", default_action=DefaultAction.DISCARD),
     Domain("redir.example", default_action=DefaultAction.REDIRECT,
            redirect_to="info@example.com"),
     Domain("same.example", default_action=DefaultAction.REDIRECT_DOMAIN,
            redirect_to="example.com")],
    [Mailbox("info", "example.com", aliases=("sales",), max_size=10_000),
     Mailbox("full", "example.com", max_size=1000),
     Mailbox("fwd", "example.com", max_size=1000, no_save=True, copies_to=("x@ext.example",)),
     Mailbox("off", "example.com", enabled=False),
     Mailbox("big", "example.com")])
USAGE = {"info@example.com": 4000, "full@example.com": 1000, "fwd@example.com": 5000}


async def usage(mailbox: Mailbox) -> int:
    return USAGE.get(mailbox.address, 0)


def request(recipient: str, state: str = "RCPT", size: int = 0, **extra: str) -> bytes:
    attrs = {"request": "smtpd_access_policy", "protocol_state": state,
             "protocol_name": "ESMTP", "client_address": "192.0.2.1",
             "client_name": "mx.example.net", "queue_id": "", "sender": "s@example.net",
             "recipient": recipient, "instance": "1a.2b.3", "size": str(size), **extra}
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def transcript(data: bytes, policy: config.Policy | None = None,
               directory: object = DIRECTORY) -> tuple[bytes, list[str]]:
    """Feed the bytes through the parser and the rules; return the reply bytes and rules."""
    service = PolicyService(policy or config.Policy(), directory,  # type: ignore[arg-type]
                            usage, 65536)

    async def run() -> tuple[bytes, list[str]]:
        out, rules = b"", []
        for req in Parser().feed(data):
            decision = await service.answer(req)
            out += encode_action(decision.action)
            rules.append(decision.rule)
        return out, rules

    return asyncio.run(run())


REJECT = b"action=550 5.1.1 mailbox does not exist\n\n"  # Postfix adds "<addr>: Recipient ..."
GOLDEN = [
    # (name, request bytes, reply bytes, rule)
    ("mailbox", request("info@example.com"), b"action=DUNNO\n\n", "default"),
    ("mailbox, case and extension", request("Info+Tag@EXAMPLE.com"), b"action=DUNNO\n\n",
     "default"),
    ("alias", request("sales@example.com"), b"action=DUNNO\n\n", "default"),
    ("unknown in reject domain", request("nobody@example.com"),
     REJECT, "unknown-reject"),
    ("unknown, case and extension", request("NoBody+x@Example.COM"), REJECT, "unknown-reject"),
    ("unknown in discard domain", request("x@discard.example"), b"action=DUNNO\n\n",
     "unknown-accept"),
    ("unknown in redirect domain", request("x@redir.example"), b"action=DUNNO\n\n",
     "unknown-accept"),
    ("unknown in redirect-domain domain, unknown in the target",
     request("x@same.example"), REJECT, "unknown-reject"),
    ("unknown in redirect-domain domain, alias in the target",
     request("sales@same.example"), b"action=DUNNO\n\n", "unknown-accept"),
    ("disabled", request("off@example.com"),
     b"action=550 5.2.1 Mailbox disabled, not accepting messages\n\n",
     "disabled"),
    ("quota already full", request("full@example.com"),
     b"action=552 5.2.2 Mailbox is full\n\n", "quota"),
    ("quota: SIZE would exceed", request("info@example.com", size=6001),
     b"action=552 5.2.2 Mailbox is full\n\n", "quota"),
    ("quota: SIZE fits exactly", request("info@example.com", size=6000), b"action=DUNNO\n\n",
     "default"),
    ("quota via alias", request("sales@example.com", size=7000),
     b"action=552 5.2.2 Mailbox is full\n\n", "quota"),
    ("quota: do-not-save mailbox is never full", request("fwd@example.com", size=99999),
     b"action=DUNNO\n\n", "default"),
    ("quota: unlimited", request("big@example.com", size=10**12), b"action=DUNNO\n\n",
     "default"),
    ("foreign domain", request("someone@elsewhere.example"), b"action=DUNNO\n\n", "not-ours"),
    ("unparsable recipient", request("not an address"), b"action=DUNNO\n\n", "not-ours"),
    ("not at RCPT", request("nobody@example.com", state="DATA"), b"action=DUNNO\n\n",
     "not-rcpt"),
    ("at MAIL", request("", state="MAIL"), b"action=DUNNO\n\n", "not-rcpt"),
    ("RCPT without recipient", request(""), b"action=DUNNO\n\n", "no-recipient"),
]


@pytest.mark.parametrize(("name", "data", "reply", "rule"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden(name, data, reply, rule):
    assert transcript(data) == (reply, [rule])


def test_never_ok():
    out, _ = transcript(b"".join(g[1] for g in GOLDEN))
    assert b"action=OK" not in out
    assert out.count(b"\n\n") == len(GOLDEN)


def test_reject_text_in_full_is_not_doubled_by_postfix():
    policy = config.Policy(reject_text="Recipient address rejected: no such user")
    assert transcript(request("nobody@example.com"), policy)[0] == (
        b"action=550 5.1.1 no such user\n\n")


def test_quota_code_452():
    policy = config.Policy(quota_code=452)
    assert transcript(request("full@example.com"), policy) == (
        b"action=452 4.2.2 Mailbox is full\n\n", ["quota"])


def test_reject_text_is_configurable():
    policy = config.Policy(reject_text="User unknown here")
    assert transcript(request("nobody@example.com"), policy)[0] == (
        b"action=550 5.1.1 User unknown here\n\n")


class BrokenDirectory:
    async def get_domain(self, name: str) -> Domain | None:
        raise RuntimeError("database is locked")

    async def find_mailbox(self, domain: str, local: str) -> None:
        raise RuntimeError("database is locked")


class SlowDirectory(MemoryDirectory):
    async def get_domain(self, name: str) -> Domain | None:
        await asyncio.sleep(5)
        return None


def test_store_error_answers_fallback():
    assert transcript(request("info@example.com"), directory=BrokenDirectory()) == (
        b"action=DEFER_IF_PERMIT 4.3.0 Service temporarily unavailable\n\n", ["fallback"])


def test_store_timeout_answers_fallback_within_deadline():
    import time

    policy = config.Policy(deadline_seconds=0.2, fallback_action="451 4.3.0 try later")
    t0 = time.monotonic()
    assert transcript(request("info@example.com"), policy, SlowDirectory([], [])) == (
        b"action=451 4.3.0 try later\n\n", ["fallback"])
    assert time.monotonic() - t0 < 1.0


def test_fallback_not_used_outside_rcpt():
    # a broken store does not matter when no lookup is needed
    assert transcript(request("x@example.com", state="MAIL"), directory=BrokenDirectory()) == (
        b"action=DUNNO\n\n", ["not-rcpt"])


def test_usage_error_answers_fallback():
    async def broken(mailbox: Mailbox) -> int:
        raise OSError(5, "I/O error")

    service = PolicyService(config.Policy(), DIRECTORY, broken, 65536)
    (req,) = Parser().feed(request("info@example.com"))
    decision = asyncio.run(service.answer(req))
    assert decision.rule == "fallback"



def test_decisions_without_usage_are_made_once_per_resolution_and_never_stale():
    from mailpolicy.core.directory import Kind, Resolution
    from mailpolicy.policy.checks import decide_now

    (req,) = Parser().feed(request("a@example.com"))
    box = Mailbox("a", "example.com")
    on = Resolution("a@example.com", Kind.MAILBOX, Domain("example.com"), box)
    first = decide_now(req, lambda _: on, None, config.Policy())
    assert first is not None and first.rule == "default"
    policy = config.Policy()
    assert decide_now(req, lambda _: on, None, policy) == first  # another policy object
    assert decide_now(req, lambda _: on, None, policy) is decide_now(req, lambda _: on, None,
                                                                     policy)
    # the directory changed: a new Resolution, a new decision
    off = Resolution("a@example.com", Kind.MAILBOX, Domain("example.com"),
                     Mailbox("a", "example.com", enabled=False))
    assert decide_now(req, lambda _: off, None, policy).rule == "disabled"
    # a quota: decided per request, from the usage
    quota = Resolution("a@example.com", Kind.MAILBOX, Domain("example.com"),
                       Mailbox("a", "example.com", max_size=100))
    assert decide_now(req, lambda _: quota, None, policy) is None
    assert decide_now(req, lambda _: quota, lambda _: 50, policy).rule == "default"
    assert decide_now(req, lambda _: quota, lambda _: 100, policy).rule == "quota"
    unknown = Resolution("x@example.com", Kind.UNKNOWN, Domain("example.com"))
    assert decide_now(req, lambda _: unknown, None, config.Policy(reject_text="no")).action == (
        "550 5.1.1 no")
    assert decide_now(req, lambda _: unknown, None, config.Policy(reject_text="gone")).action == (
        "550 5.1.1 gone")
