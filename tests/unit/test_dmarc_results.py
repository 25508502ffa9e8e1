"""Authentication-Results (RFC 8601) built with authres, and detection of forged ones."""

from __future__ import annotations

import authres

from mailpolicy.auth.dkim import DkimResult
from mailpolicy.auth.dmarc import DmarcResult
from mailpolicy.auth.results import authserv_id_of, build, claims_our_id
from mailpolicy.auth.spf import SpfResult


def test_results_header_has_spf_dkim_per_signature_and_dmarc_opendmarc_style():
    v = build("mx.local.test", SpfResult("pass", "mailfrom", "bank.example", "a@bank.example"),
              [DkimResult("pass", "bank.example", "s1", algorithm="rsa-sha256"),
               DkimResult("fail", "evil.example", "k", reason="body hash mismatch")],
              DmarcResult("pass", "bank.example", "reject", "none", record_domain="bank.example"))
    assert v.startswith("mx.local.test; spf=pass smtp.mailfrom=a@bank.example; ")
    assert "dkim=pass header.d=bank.example header.a=rsa-sha256 header.s=s1" in v
    assert 'dkim=fail reason="body hash mismatch" header.d=evil.example header.s=k' in v
    assert v.endswith("dmarc=pass (p=reject dis=none) header.from=bank.example")


def test_results_header_parses_back_with_authres():
    v = build("mx.local.test", SpfResult("none", "helo", "h.example", "postmaster@h.example"),
              [], DmarcResult("temperror", "bank.example", reason="DNS failure"))
    parsed = authres.AuthenticationResultsHeader.parse_value(v)
    assert parsed.authserv_id == "mx.local.test"
    assert [r.method for r in parsed.results] == ["spf", "dkim", "dmarc"]
    assert "smtp.helo=h.example" in v and "dkim=none" in v


def test_results_unprintable_values_are_neutralised():
    v = build("mx", SpfResult("pass", "mailfrom", "x", "a b\r\n@x"), [], None)
    assert "\r" not in v and "\n" not in v and "a?b" in v


def test_authserv_id_is_read_past_comments_and_case_folded():
    assert authserv_id_of(" (c) MX.Local.Test 1; spf=pass") == "mx.local.test"
    assert authserv_id_of("mx.local.test;dkim=pass") == "mx.local.test"


def test_incoming_header_with_our_authserv_id_is_a_forgery():
    assert claims_our_id("MX.local.test; dmarc=pass", "mx.local.test")
    assert not claims_our_id("gmail.com; dmarc=pass", "mx.local.test")
    assert claims_our_id("", "mx.local.test")  # unreadable: removed too


def test_reason_texts_cannot_break_out_of_the_header() -> None:
    from mailpolicy.auth.results import _reason

    assert _reason('bad "key"\r\nX-Evil: yes\\') == "bad  key   X-Evil: yes"
    assert _reason("\r\n") is None
    assert len(_reason("x" * 500) or "") == 200
