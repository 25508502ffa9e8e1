"""Identifier alignment (RFC 9989 §4.4), relaxed by tree-walk Organizational Domain, strict by
equality; includes OpenDMARC's test_alignment.c pairs where they still hold under RFC 9989."""

from __future__ import annotations

import pytest
from test_dmarc_treewalk import FakeDns

from mailpolicy.auth.dmarc import Aligner

ZONE = {
    "_dmarc.example.com": "v=DMARC1; p=reject",
    "_dmarc.co.uk": "v=DMARC1; p=none; psd=y",
    "_dmarc.a.co.uk": "v=DMARC1; p=reject",
    "_dmarc.b.co.uk": "v=DMARC1; p=reject",
}


@pytest.mark.parametrize(("ident", "author", "mode", "expected"), [
    ("example.com", "example.com", "s", True),
    ("EXAMPLE.com.", "example.com", "s", True),
    ("mail.example.com", "example.com", "s", False),
    ("mail.example.com", "example.com", "r", True),
    ("example.com", "news.example.com", "r", True),
    ("a.example.com", "b.example.com", "r", True),  # siblings share the org domain
    ("example.net", "example.com", "r", False),
    ("a.co.uk", "b.co.uk", "r", False),  # across a public suffix (psd=y)
    ("x.a.co.uk", "a.co.uk", "r", True),
    ("", "example.com", "r", False),
])
async def test_alignment(ident, author, mode, expected):
    assert await Aligner(FakeDns(ZONE).lookup).aligned(ident, author, mode) is expected


async def test_alignment_relaxed_without_any_record_only_equal_names_align():
    al = Aligner(FakeDns({}).lookup)
    assert await al.aligned("mail.nodmarc.test", "nodmarc.test", "r") is False


async def test_alignment_relaxed_memoises_org_domain_walks():
    dns = FakeDns(ZONE)
    al = Aligner(dns.lookup)
    await al.aligned("a.example.com", "example.com", "r")
    n = len(dns.queries)
    await al.aligned("a.example.com", "example.com", "r")
    assert len(dns.queries) == n


async def test_alignment_relaxed_dns_failure_is_unknown():
    al = Aligner(FakeDns({"_dmarc.example.com": "TEMP"}).lookup)
    assert await al.aligned("mail.example.com", "example.com", "r") is None
