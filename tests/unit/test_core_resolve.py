"""resolve(): the one recipient resolver, over a plain in-memory Directory."""

import pytest
from memdir import MemoryDirectory

from mailpolicy.core.directory import MAX_REDIRECT_HOPS, Kind, resolve
from mailpolicy.core.model import DefaultAction, Domain, Mailbox


def d(name, action=DefaultAction.REJECT, redirect_to=""):
    return Domain(name=name, default_action=action, redirect_to=redirect_to)


@pytest.fixture
def directory():
    return MemoryDirectory(
        [
            d("a.test"), d("discard.test", DefaultAction.DISCARD),
            d("redir.test", DefaultAction.REDIRECT, "boss@a.test"),
            d("rd.test", DefaultAction.REDIRECT_DOMAIN, "a.test"),
            d("loop1.test", DefaultAction.REDIRECT_DOMAIN, "loop2.test"),
            d("loop2.test", DefaultAction.REDIRECT_DOMAIN, "loop1.test"),
            d("xn--exmple-cua.test")],
        [Mailbox(name="alice", domain="a.test", aliases=("al",)),
               Mailbox(name="boss", domain="a.test"),
               Mailbox(name="al.x", domain="a.test"),
               Mailbox(name="jo", domain="xn--exmple-cua.test")])


async def test_exact_mailbox_is_case_folded(directory):
    r = await resolve(directory, "<ALICE@A.Test>")
    assert (r.kind, r.mailbox.name, r.via_alias) == (Kind.MAILBOX, "alice", False)


async def test_alias_resolves_to_its_mailbox(directory):
    r = await resolve(directory, "al@a.test")
    assert (r.kind, r.mailbox.name, r.via_alias) == (Kind.MAILBOX, "alice", True)


async def test_extension_is_stripped_only_when_the_full_name_is_unknown(directory):
    r = await resolve(directory, "alice+news@a.test")
    assert (r.mailbox.name, r.extension) == ("alice", "news")
    r = await resolve(directory, "al+x@a.test")
    assert (r.mailbox.name, r.via_alias) == ("alice", True)


async def test_exact_name_beats_alias_and_extension(directory):
    r = await resolve(directory, "al.x@a.test")
    assert r.mailbox.name == "al.x"


async def test_unknown_in_reject_domain(directory):
    r = await resolve(directory, "nobody@a.test")
    assert (r.kind, r.action, r.accepted_at_rcpt) == (Kind.UNKNOWN, DefaultAction.REJECT, False)


async def test_unknown_in_discard_domain_is_accepted(directory):
    r = await resolve(directory, "x@discard.test")
    assert (r.action, r.accepted_at_rcpt, r.redirect) == (DefaultAction.DISCARD, True, None)


async def test_redirect_to_address(directory):
    r = await resolve(directory, "who@redir.test")
    assert r.accepted_at_rcpt and r.final.kind is Kind.MAILBOX
    assert r.final.mailbox.name == "boss"


async def test_redirect_domain_keeps_local_part(directory):
    r = await resolve(directory, "Alice@rd.test")
    assert r.final.mailbox.address == "alice@a.test"
    r = await resolve(directory, "ghost@rd.test")
    assert r.final.kind is Kind.UNKNOWN and r.final.action is DefaultAction.REJECT


async def test_redirect_domain_loop_is_bounded_and_flagged(directory):
    r = await resolve(directory, "x@loop1.test")
    assert r.loop and r.final.kind is Kind.UNKNOWN
    chain = []
    while r is not None:
        chain.append(r.address)
        r = r.redirect
    assert len(chain) <= MAX_REDIRECT_HOPS + 1


async def test_foreign_and_invalid(directory):
    assert (await resolve(directory, "x@elsewhere.test")).kind is Kind.FOREIGN
    assert (await resolve(directory, "no-at-sign")).kind is Kind.INVALID
    assert (await resolve(directory, "x@bad..domain")).kind is Kind.INVALID


async def test_idna_domain(directory):
    r = await resolve(directory, "jo@EXÄMPLE.test")
    assert r.kind is Kind.MAILBOX and r.address == "jo@xn--exmple-cua.test"
