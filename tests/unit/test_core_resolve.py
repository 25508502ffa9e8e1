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


async def test_chains_that_lead_nowhere_are_not_accepted_at_rcpt(directory):
    """Issue #13: a redirect chain is accepted only when it ends somewhere."""
    assert not (await resolve(directory, "ghost@rd.test")).accepted_at_rcpt  # unknown there
    assert not (await resolve(directory, "x@loop1.test")).accepted_at_rcpt  # loop
    assert (await resolve(directory, "Alice@rd.test")).accepted_at_rcpt
    off = MemoryDirectory([d("a.test"), d("r.test", DefaultAction.REDIRECT, "off@a.test"),
                           d("x.test", DefaultAction.REDIRECT, "x@elsewhere.test"),
                           d("k.test", DefaultAction.REDIRECT_DOMAIN, "discard.test"),
                           d("discard.test", DefaultAction.DISCARD)],
                          [Mailbox(name="off", domain="a.test", enabled=False)])
    assert not (await resolve(off, "y@r.test")).accepted_at_rcpt  # a disabled mailbox
    assert (await resolve(off, "y@x.test")).accepted_at_rcpt  # leaves us: foreign
    assert (await resolve(off, "y@k.test")).accepted_at_rcpt  # a discard the admin chose


async def test_postmaster_and_abuse_go_to_the_domain_postmaster():
    """RFC 5321 4.5.1 / RFC 2142: every hosted domain (a reject domain too) accepts them,
    unless an explicit mailbox or alias of that name exists."""
    directory = MemoryDirectory(
        [Domain(name="a.test", postmaster="boss@a.test"), Domain(name="b.test"),
         Domain(name="c.test", postmaster="hostmaster@provider.test")],
        [Mailbox(name="boss", domain="a.test"),
         Mailbox(name="desk", domain="a.test", aliases=("abuse",))])
    r = await resolve(directory, "PostMaster@a.test")
    assert r.role and r.accepted_at_rcpt and r.final.mailbox.name == "boss"
    r = await resolve(directory, "postmaster+x@a.test")
    assert r.final.mailbox.name == "boss"
    r = await resolve(directory, "abuse@a.test")  # an explicit alias wins
    assert (r.kind, r.mailbox.name, r.role) == (Kind.MAILBOX, "desk", False)
    r = await resolve(directory, "postmaster@b.test")  # no postmaster set: nowhere
    assert not r.role and not r.accepted_at_rcpt
    r = await resolve(directory, "abuse@c.test")
    assert r.accepted_at_rcpt and r.final.kind is Kind.FOREIGN
    assert not (await resolve(directory, "other@a.test")).accepted_at_rcpt
