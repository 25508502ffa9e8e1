"""The pure autoresponder decision: one test per rule, named after the rule."""

from __future__ import annotations

import datetime as dt

import pytest

from mailpolicy.autoreply.suppress import Decision, decide, is_system_sender, parse_headers
from mailpolicy.core.model import Autoresponder, Mailbox

TODAY = dt.date(2026, 7, 15)
MB = Mailbox(name="bob", domain="example.com", aliases=("robert", "b.smith"), id=7)
AR = Autoresponder(mailbox_id=7, enabled=True, message="I am away.")
BASE = [("From", "Alice <alice@example.org>"), ("To", "Bob <bob@example.com>"),
        ("Subject", "hello"), ("Message-ID", "<m1@example.org>")]


def run(headers=None, *, sender="alice@example.org", ar=AR, mb=MB, today=TODAY,
        check_recipient=True, extra=()) -> Decision:
    hs = list(BASE if headers is None else headers) + list(extra)
    return decide(mb, ar, today=today, sender=sender, headers=hs,
                  check_recipient=check_recipient)


def test_reply_when_nothing_suppresses():
    assert run() == Decision(True, "reply")


# --- enabled + message + date window --------------------------------------------------------
def test_disabled():
    assert run(ar=Autoresponder(7, enabled=False, message="x")) == Decision(False, "disabled")
    assert run(ar=None) == Decision(False, "disabled")


def test_no_message():
    assert run(ar=Autoresponder(7, enabled=True, message="  \n ")).rule == "no-message"


def test_before_start():
    ar = Autoresponder(7, enabled=True, message="x", start=TODAY + dt.timedelta(days=1))
    assert run(ar=ar) == Decision(False, "before-start")


def test_after_end():
    ar = Autoresponder(7, enabled=True, message="x", end=TODAY - dt.timedelta(days=1))
    assert run(ar=ar) == Decision(False, "after-end")


def test_date_window_inclusive_on_start_and_end_day():
    ar = Autoresponder(7, enabled=True, message="x", start=TODAY, end=TODAY)
    assert run(ar=ar).send
    ar2 = Autoresponder(7, enabled=True, message="x", start=TODAY - dt.timedelta(days=3),
                        end=TODAY + dt.timedelta(days=3))
    assert run(ar=ar2).send
    assert run(ar=ar, today=TODAY + dt.timedelta(days=1)).rule == "after-end"


# --- senders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sender", ["", "<>", "  "])
def test_null_sender(sender):
    assert run(sender=sender) == Decision(False, "null-sender")


def test_invalid_sender():
    assert run(sender="not-an-address").rule == "invalid-sender"


@pytest.mark.parametrize("sender", [
    "MAILER-DAEMON@example.org", "mailer-daemon@example.org", "owner-list@example.org",
    "users-request@lists.example.org", "users-request+bounce@lists.example.org",
    "LISTSERV@example.org", "Majordomo@example.org", "noreply@example.org",
    "no-reply@example.org", "no_reply@example.org", "do-not-reply@example.org",
    "donotreply@example.org", "bounces+alice=example.org@lists.example.org",
    "bounce-123-456@mail.example.org", "list-bounces@example.org", "info.noreply@example.org",
])
def test_system_sender(sender):
    assert run(sender=sender) == Decision(False, "system-sender")


@pytest.mark.parametrize("sender", ["postmaster@example.org", "Postmaster@example.org",
                                    "owner@example.org", "requester@example.org",
                                    "replyguy@example.org", "SRS0=ab=cd=example.net=x@f.org"])
def test_system_sender_postmaster_and_humans_are_not_system(sender):
    assert not is_system_sender(sender.split("@")[0])
    assert run(sender=sender).send


@pytest.mark.parametrize("sender", ["bob@example.com", "BOB@Example.COM", "robert@example.com",
                                    "b.smith@EXAMPLE.com", "bob+tag@example.com"])
def test_own_address(sender):
    assert run(sender=sender) == Decision(False, "own-address")


# --- headers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["auto-replied", "auto-generated", "Auto-Replied (vacation)",
                                   "auto-notified; owner-email=x@y", "yes"])
def test_auto_submitted(value):
    assert run(extra=[("Auto-Submitted", value)]) == Decision(False, "auto-submitted")


@pytest.mark.parametrize("value", ["no", "No", " no ", "no (a human wrote this)"])
def test_auto_submitted_no_is_personal(value):
    assert run(extra=[("auto-submitted", value)]).send


@pytest.mark.parametrize("value", ["bulk", "list", "junk", "BULK", "List", " Junk "])
def test_precedence(value):
    assert run(extra=[("Precedence", value)]) == Decision(False, "precedence")


def test_precedence_normal_replies():
    assert run(extra=[("Precedence", "normal")]).send
    assert run(extra=[("Precedence", "first-class")]).send


@pytest.mark.parametrize("name", ["List-Id", "List-Help", "List-Subscribe", "List-Unsubscribe",
                                  "List-Post", "List-Owner", "List-Archive", "list-id",
                                  "List-Unsubscribe-Post"])
def test_list_header(name):
    assert run(extra=[(name, "<x.example.org>")]) == Decision(False, "list-header")


@pytest.mark.parametrize("value", ["All", "OOF", "all", "DR, OOF, RN", "RN,AutoReply,All"])
def test_auto_response_suppress(value):
    assert run(extra=[("X-Auto-Response-Suppress", value)]) == Decision(
        False, "auto-response-suppress")


def test_auto_response_suppress_other_flags_reply():
    assert run(extra=[("X-Auto-Response-Suppress", "DR, RN, NRN")]).send


def test_dmarc_quarantine():
    got = run(extra=[("X-Mailpolicy-Quarantine", "dmarc=fail policy=reject")])
    assert got == Decision(False, "dmarc-quarantine")


@pytest.mark.parametrize("header", [("X-Spam-Flag", "YES"), ("X-Spam-Flag", "yes"),
                                    ("X-Spam-Status", "Yes, score=9.1 required=5.0"),
                                    ("x-spam-status", "YES")])
def test_spam(header):
    assert run(extra=[header]) == Decision(False, "spam")


def test_spam_no_flags_reply():
    assert run(extra=[("X-Spam-Flag", "NO"), ("X-Spam-Status", "No, score=0.1")]).send


# --- personal check ---------------------------------------------------------------------------
def test_not_personal():
    hs = [("From", "alice@example.org"), ("To", "all@lists.example.org"), ("Subject", "x")]
    assert run(hs) == Decision(False, "not-personal")


def test_not_personal_without_any_recipient_header():
    assert run([("From", "alice@example.org")]).rule == "not-personal"


@pytest.mark.parametrize("header", [
    ("To", "Bob <bob@example.com>"), ("Cc", "x@y.org, ROBERT@Example.com"),
    ("Bcc", "b.smith@example.com"), ("Resent-To", "bob@example.com"),
    ("Resent-Cc", "robert@example.com"), ("Resent-Bcc", "bob@example.com"),
    ("To", "\"Smith, Bob\" <bob+work@example.com>"), ("TO", "bob@EXAMPLE.COM"),
])
def test_not_personal_passes_for_any_own_address_in_recipient_headers(header):
    hs = [("From", "alice@example.org"), ("To", "other@example.org"), header]
    assert run(hs).send


def test_not_personal_check_can_be_disabled():
    hs = [("From", "alice@example.org"), ("To", "all@lists.example.org")]
    assert run(hs, check_recipient=False).send


def test_not_personal_other_domain_same_name():
    hs = [("To", "bob@example.net")]
    assert run(hs).rule == "not-personal"


# --- header parsing ---------------------------------------------------------------------------
def test_parse_headers_unfolds_and_stops_at_body():
    raw = (b"From: a@b.org\r\nTo: x@y.org,\r\n\tbob@example.com\r\nSubject: hi\r\n\r\n"
           b"List-Id: not a header\r\n")
    hs = parse_headers(raw)
    assert hs == [("From", "a@b.org"), ("To", "x@y.org, bob@example.com"), ("Subject", "hi")]
    assert run(hs).send


def test_parse_headers_lf_only_and_8bit():
    raw = "Subject: Grüße\nTo: bob@example.com\n\nbody".encode()
    assert parse_headers(raw) == [("Subject", "Grüße"), ("To", "bob@example.com")]


def test_parse_headers_is_bounded():
    raw = b"X-A: " + b"a" * 1000 + b"\r\n" + b"To: bob@example.com\r\n\r\n"
    assert parse_headers(raw, limit=100) == [("X-A", "a" * 95)]
    many = b"".join(b"X-%d: v\r\n" % i for i in range(5000)) + b"\r\n"
    assert len(parse_headers(many)) == 1000
