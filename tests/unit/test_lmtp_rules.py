"""Per-recipient LMTP decisions, enhanced status codes, quarantine marker and trace headers."""

from __future__ import annotations

from pathlib import Path

from mailpolicy import config
from mailpolicy.core.directory import Kind, Resolution
from mailpolicy.core.model import DefaultAction, Domain, Mailbox
from mailpolicy.core.quota import exceeds_quota, quota_reply
from mailpolicy.core.replies import Reply, with_enhanced_code
from mailpolicy.lmtp.deliver import (
    Target,
    quarantine_verdict,
    rcpt_decision,
    trace_headers,
)

CFG = config.from_dict({"paths": {"state_dir": "/srv/mp", "maildir_root": "/srv/mail"}})
DOM = Domain(name="example.test")
ALICE = Mailbox(name="alice", domain="example.test", id=1)


def mailbox_res(mb: Mailbox, **kw) -> Resolution:
    return Resolution(address=mb.address, kind=Kind.MAILBOX, domain=DOM, mailbox=mb, **kw)


def test_mailbox_delivers_to_its_maildir():
    t = rcpt_decision(CFG, "Alice@example.test", mailbox_res(ALICE))
    assert isinstance(t, Target)
    assert t.maildir == Path("/srv/mail/example.test/alice/Maildir")
    assert t.rcpt == "Alice@example.test"


def test_alias_delivers_to_the_mailbox():
    t = rcpt_decision(CFG, "al@example.test", mailbox_res(ALICE, via_alias=True))
    assert isinstance(t, Target) and t.mailbox == ALICE


def test_unknown_is_450_4_1_1():
    """Refused at RCPT by the policy service: here it was accepted before the directory
    changed, so Postfix must keep it (4xx), never bounce it."""
    r = rcpt_decision(CFG, "x@example.test",
                      Resolution(address="x@example.test", kind=Kind.UNKNOWN, domain=DOM))
    assert isinstance(r, Reply) and (r.code, r.dsn) == (450, "4.1.1")
    assert "<x@example.test>" in r.text


def test_foreign_and_invalid_are_450_4_1_1():
    for kind in (Kind.FOREIGN, Kind.INVALID):
        r = rcpt_decision(CFG, "x@other.test", Resolution(address="x@other.test", kind=kind))
        assert isinstance(r, Reply) and r.code == 450 and r.dsn == "4.1.1"


def test_disabled_is_550_5_2_1():
    mb = Mailbox(name="bob", domain="example.test", enabled=False)
    r = rcpt_decision(CFG, mb.address, mailbox_res(mb))
    assert isinstance(r, Reply) and (r.code, r.dsn) == (550, "5.2.1")


def test_no_save_is_accepted_but_not_stored():
    mb = Mailbox(name="fwd", domain="example.test", no_save=True, copies_to=("a@b.test",))
    t = rcpt_decision(CFG, mb.address, mailbox_res(mb))
    assert isinstance(t, Target) and t.maildir is None and t.mailbox == mb


def test_discard_domain_accepts_and_drops():
    dom = Domain(name="example.test", default_action=DefaultAction.DISCARD)
    t = rcpt_decision(CFG, "x@example.test",
                      Resolution(address="x@example.test", kind=Kind.UNKNOWN, domain=dom))
    assert isinstance(t, Target) and t.mailbox is None and t.maildir is None


def test_redirect_ending_in_local_mailbox_delivers_there():
    dom = Domain(name="example.test", default_action=DefaultAction.REDIRECT,
                 redirect_to="alice@example.test")
    res = Resolution(address="x@example.test", kind=Kind.UNKNOWN, domain=dom,
                     redirect=mailbox_res(ALICE))
    t = rcpt_decision(CFG, "x@example.test", res)
    assert isinstance(t, Target) and t.mailbox == ALICE


def test_redirect_loop_is_refused():
    dom = Domain(name="example.test", default_action=DefaultAction.REDIRECT_DOMAIN,
                 redirect_to="example.test")
    res = Resolution(address="x@example.test", kind=Kind.UNKNOWN, domain=dom, loop=True)
    assert isinstance(rcpt_decision(CFG, "x@example.test", res), Reply)


def test_quota_reply_follows_config():
    assert (quota_reply(CFG.policy.quota_code).code,
            quota_reply(CFG.policy.quota_code).dsn) == (552, "5.2.2")
    assert (quota_reply(452).code, quota_reply(452).dsn) == (452, "4.2.2")


def test_one_quota_rule_for_rcpt_and_delivery():
    assert not exceeds_quota(90, 10, 100)
    assert exceeds_quota(91, 10, 100)
    assert not exceeds_quota(10**12, 1, None)
    # a full mailbox refuses even when the size is not known yet (RCPT without SIZE=)
    assert exceeds_quota(100, 0, 100) and not exceeds_quota(99, 0, 100)


def test_enhanced_codes_added_only_where_missing():
    assert with_enhanced_code(b"250 OK") == b"250 2.0.0 OK"
    assert with_enhanced_code(b"503 Error: need MAIL command") == (
        b"503 5.5.1 Error: need MAIL command")
    assert with_enhanced_code(b"550 5.1.1 <x> no") == b"550 5.1.1 <x> no"
    assert with_enhanced_code(b"220 host ready") == b"220 host ready"
    assert with_enhanced_code(b"354 End data") == b"354 End data"
    assert with_enhanced_code(b"552 Error: Too much mail data").startswith(b"552 5.3.4 ")
    # one table for LMTP and the filter: 451 is 4.3.0 everywhere
    assert with_enhanced_code(b"451 try later") == b"451 4.3.0 try later"
    assert with_enhanced_code(b"421 bye") == b"421 4.3.0 bye"


def test_quarantine_header_found_in_headers_only():
    msg = b"From: a@b\nX-Mailpolicy-Quarantine: dmarc=fail\n  (p=reject)\nSubject: s\n\nbody\n"
    assert quarantine_verdict(msg) == "dmarc=fail (p=reject)"
    assert quarantine_verdict(b"x-mailpolicy-QUARANTINE: reject\n\n") == "reject"
    assert quarantine_verdict(b"Subject: s\n\nX-Mailpolicy-Quarantine: fake\n") is None
    assert quarantine_verdict(b"Subject: s\n X-Mailpolicy-Quarantine: folded\n\n") is None
    assert quarantine_verdict(b"\nX-Mailpolicy-Quarantine: body\n") is None


def test_trace_headers():
    assert trace_headers("s@x.test", ALICE) == (
        b"Return-Path: <s@x.test>\nDelivered-To: alice@example.test\n")
    assert trace_headers("<>", ALICE).startswith(b"Return-Path: <>\n")
    assert trace_headers("", ALICE).startswith(b"Return-Path: <>\n")
