"""Composing the auto-reply: headers, encodings, attachment, header injection refused."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy
from email.header import decode_header, make_header

import pytest

from mailpolicy.autoreply.compose import ComposeError, compose, response_key, to_bytes
from mailpolicy.core.model import Attachment, Autoresponder, Mailbox

MB = Mailbox(name="bob", domain="example.com", id=3)
AR = Autoresponder(mailbox_id=3, enabled=True, message="I am away until Monday.")
ORIG = [("From", "Alice <alice@example.org>"), ("To", "bob@example.com"),
        ("Subject", "Lunch?"), ("Message-ID", "<m2@example.org>"),
        ("References", "<m0@example.org> <m1@example.org>"), ("In-Reply-To", "<m1@example.org>")]
NOW = dt.datetime(2026, 7, 15, 12, 0, tzinfo=dt.UTC)


def build(ar=AR, original=ORIG, recipient="alice@example.org"):
    raw = to_bytes(compose(MB, ar, recipient=recipient, original=original,
                           hostname="mx.example.com", now=NOW))
    return raw, message_from_bytes(raw, policy=policy.default)


def body(part) -> str:
    return part.get_content().replace("\r\n", "\n")


def test_required_headers():
    raw, m = build()
    assert m["To"] == "alice@example.org"
    assert m["From"] == "bob@example.com"
    assert m["Subject"] == "Auto: Lunch?"
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["Precedence"] == "bulk"
    assert m["X-Auto-Response-Suppress"] == "All"
    assert m["In-Reply-To"] == "<m2@example.org>"
    assert m["References"] == "<m0@example.org> <m1@example.org> <m2@example.org>"
    assert m["Message-ID"].endswith("@mx.example.com>") and m["Message-ID"] != "<m2@example.org>"
    assert m["Date"] == "Wed, 15 Jul 2026 12:00:00 +0000"
    assert m["MIME-Version"] == "1.0"
    assert m.get_content_type() == "text/plain"
    assert m.get_content_charset() == "utf-8"
    assert body(m) == "I am away until Monday.\n"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()


def test_references_from_in_reply_to_when_no_references():
    orig = [("Subject", "x"), ("Message-ID", "<c@x>"), ("In-Reply-To", "<p@x> junk <q@x>")]
    _, m = build(original=orig)
    assert m["References"] == "<p@x> <c@x>"


def test_no_message_id_no_threading_headers():
    _, m = build(original=[("Subject", "x")])
    assert m["In-Reply-To"] is None and m["References"] is None


def test_new_message_id_each_time():
    assert build()[1]["Message-ID"] != build()[1]["Message-ID"]


def test_configured_from_and_subject():
    ar = Autoresponder(3, True, from_="Bob Smith <b.smith@example.com>", subject="Out of office",
                       message="x")
    _, m = build(ar=ar)
    assert m["From"].addresses[0].addr_spec == "b.smith@example.com"
    assert m["From"].addresses[0].display_name == "Bob Smith"
    assert m["Subject"] == "Out of office"


def test_unusable_from_falls_back_to_mailbox_address():
    _, m = build(ar=Autoresponder(3, True, from_="Just A Name", message="x"))
    assert m["From"] == "bob@example.com"


def test_non_ascii_subject_is_rfc2047_encoded():
    orig = [("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Köln"), ("Message-ID", "<a@b>")]
    raw, m = build(original=orig)
    assert str(m["Subject"]) == "Auto: Grüße aus Köln"
    subject_line = next(line for line in raw.split(b"\r\n") if line.startswith(b"Subject:"))
    assert b"=?utf-8?" in subject_line and raw.isascii()


def test_non_ascii_configured_subject_and_from_name():
    ar = Autoresponder(3, True, from_="Bøb <bob@example.com>", subject="Abwesend – Grüße",
                       message="x")
    raw, m = build(ar=ar)
    assert raw.isascii()
    assert str(m["Subject"]) == "Abwesend – Grüße"
    assert m["From"].addresses[0].display_name == "Bøb"


def test_ascii_subject_not_encoded():
    raw, _ = build()
    assert b"Subject: Auto: Lunch?\r\n" in raw


def test_missing_subject_gets_default():
    _, m = build(original=[("Message-ID", "<a@b>")])
    assert m["Subject"] == "Automated reply"


def test_long_subject_truncated():
    _, m = build(original=[("Subject", "x" * 1000)])
    assert len(str(m["Subject"])) <= 200 and str(m["Subject"]).endswith("…")


def test_utf8_body_quoted_printable():
    ar = Autoresponder(3, True, message="Ich bin bis Montag nicht da. Grüße\r\nBob")
    raw, m = build(ar=ar)
    assert m["Content-Transfer-Encoding"] == "quoted-printable"
    assert body(m) == "Ich bin bis Montag nicht da. Grüße\nBob\n"
    assert raw.isascii()


def test_ascii_body_7bit():
    _, m = build()
    assert m["Content-Transfer-Encoding"] == "7bit"


def test_long_ascii_lines_quoted_printable():
    _, m = build(ar=Autoresponder(3, True, message="word " * 100))
    assert m["Content-Transfer-Encoding"] == "quoted-printable"
    assert body(m) == "word " * 100 + "\n"


def test_attachment_multipart_mixed():
    data = bytes(range(256)) * 10
    ar = Autoresponder(3, True, message="See attached.",
                       attachment=Attachment("plan.pdf", "application/pdf", data))
    _raw, m = build(ar=ar)
    assert m.get_content_type() == "multipart/mixed"
    text, att = list(m.iter_parts())
    assert text.get_content_type() == "text/plain" and body(text) == "See attached.\n"
    assert att.get_content_type() == "application/pdf"
    assert att.get_filename() == "plan.pdf"
    assert att.get_content_disposition() == "attachment"
    assert att.get_content() == data
    assert m["Auto-Submitted"] == "auto-replied"


def test_attachment_non_ascii_name_and_bad_type():
    ar = Autoresponder(3, True, message="x", attachment=Attachment(
        "Plan für\r\nBcc: evil@x/../a.txt", "multipart/mixed", b"hello"))
    raw, m = build(ar=ar)
    att = list(m.iter_parts())[1]
    assert att.get_content_type() == "application/octet-stream"
    assert "\n" not in att.get_filename() and "/" not in att.get_filename()
    assert att.get_filename().startswith("Plan für")
    assert b"\r\nBcc:" not in raw


@pytest.mark.parametrize("field", ["subject", "from_"])
@pytest.mark.parametrize("evil", ["Hi\r\nBcc: victim@example.net", "Hi\nBcc: v@x", "Hi\rX: y",
                                  "Hi\x00"])
def test_header_injection_refused(field, evil):
    ar = Autoresponder(3, True, message="x", **{field: evil})
    with pytest.raises(ComposeError):
        build(ar=ar)


def test_injection_through_original_subject_is_neutralised():
    orig = [("Subject", "=?utf-8?q?hi=0D=0ABcc=3A_victim=40example=2Enet?="),
            ("Message-ID", "<a@b>\r\nBcc: x@y")]
    _raw, m = build(original=orig)
    assert m["Bcc"] is None
    assert str(m["Subject"]) == "Auto: hi Bcc: victim@example.net"
    assert m["In-Reply-To"] == "<a@b>"


def test_injection_through_message_stays_in_body():
    ar = Autoresponder(3, True, message="hi\r\n\r\nBcc: victim@example.net\r\n.\r\nQUIT")
    _, m = build(ar=ar)
    assert m["Bcc"] is None and "Bcc: victim" in m.get_content()


def test_recipient_with_crlf_refused():
    with pytest.raises(ComposeError):
        build(recipient="a@b.org\r\nBcc: c@d")


def test_response_key_changes_with_text_and_is_field_separated():
    k = response_key(AR)
    assert len(k) == 64
    assert response_key(Autoresponder(3, True, message="I am away until Monday.")) == k
    assert response_key(Autoresponder(3, True, message="I am away until Tuesday.")) != k
    assert response_key(Autoresponder(3, True, subject="ab", message="c")) != response_key(
        Autoresponder(3, True, subject="a", message="bc"))
    assert response_key(Autoresponder(3, True, message="x", attachment=Attachment(
        "a", "text/plain", b"1"))) != response_key(Autoresponder(3, True, message="x"))
    # enabled flag and dates are not part of the response
    assert response_key(Autoresponder(3, False, message=AR.message,
                                      end=dt.date(2030, 1, 1))) == k


def test_decoded_header_roundtrip_for_smtputf8_recipient():
    _raw, m = build(recipient="jörg@exämple.org")
    assert m["To"] == "jörg@exämple.org"
    assert str(make_header(decode_header(m["Subject"]))) == "Auto: Lunch?"
