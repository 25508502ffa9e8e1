"""RFC 9989 §4.7/§4.8 record parsing: each test is named after the rule it checks."""

from __future__ import annotations

import pytest

from mailpolicy.auth.dmarc import parse_record


def test_record_must_start_with_v_dmarc1():
    assert parse_record("p=reject; v=DMARC1") is None
    assert parse_record("v=spf1 -all") is None


def test_record_version_value_is_case_sensitive():
    assert parse_record("v=dmarc1; p=reject") is None
    assert parse_record("v=DMARC1; p=reject") is not None


def test_record_whitespace_around_equals_and_separators_is_allowed():
    r = parse_record("v = DMARC1 ;  p = reject ;sp=none")
    assert r.p == "reject" and r.sp == "none"


def test_record_policy_values():
    for p in ("none", "quarantine", "reject"):
        assert parse_record(f"v=DMARC1; p={p}").p == p


def test_record_policy_value_is_case_insensitive():
    assert parse_record("v=DMARC1; p=Reject").p == "reject"


def test_record_policy_prefix_is_not_a_policy_opendmarc_quirk():
    # OpenDMARC accepts p=n by prefix match; RFC 9989 does not
    r = parse_record("v=DMARC1; p=n")
    assert r.p is None and r.errors


def test_record_missing_p_is_none():
    assert parse_record("v=DMARC1; rua=mailto:d@example.com").p is None


def test_record_invalid_tag_values_fall_back_to_defaults():
    r = parse_record("v=DMARC1; p=reject; adkim=bob; aspf=x; t=maybe; psd=q; pct=500")
    assert (r.p, r.adkim, r.aspf, r.t, r.psd, r.pct) == ("reject", "r", "r", False, "u", None)
    assert len(r.errors) == 5


def test_record_unknown_tags_are_ignored():
    r = parse_record("v=DMARC1; p=quarantine; foo=bar; ri=86400; rf=afrf")
    assert r.p == "quarantine" and not r.errors


def test_record_syntax_error_in_other_tags_is_ignored():
    r = parse_record("v=DMARC1; p=reject; garbage; =x")
    assert r.p == "reject" and len(r.errors) == 2


def test_record_duplicate_tag_keeps_the_first():
    r = parse_record("v=DMARC1; p=none; p=reject")
    assert r.p == "none"


def test_record_trailing_separator_is_fine():
    assert parse_record("v=DMARC1; p=reject;").p == "reject"


def test_record_sp_np_t_psd_strict_modes():
    r = parse_record("v=DMARC1; p=none; sp=quarantine; np=reject; adkim=s; aspf=s; t=y; psd=n")
    assert (r.sp, r.np, r.adkim, r.aspf, r.t, r.psd) == ("quarantine", "reject", "s", "s",
                                                         True, "n")


@pytest.mark.parametrize(("rua", "ok"), [
    ("mailto:d@example.com", True),
    ("mailto:d@example.com,mailto:e@example.net!10m", True),
    ("https://example.com/report", False),
    ("d@example.com", False),
])
def test_record_rua_must_be_mailto_uris(rua, ok):
    r = parse_record(f"v=DMARC1; p=none; rua={rua}")
    assert bool(r.rua) is ok


def test_record_pct_is_historic_but_parsed():
    assert parse_record("v=DMARC1; p=reject; pct=0").pct == 0
