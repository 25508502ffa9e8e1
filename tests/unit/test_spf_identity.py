"""Which SPF identity is checked and from which client address (RFC 7208 §2.3/§2.4)."""

from __future__ import annotations

from mailpolicy.auth.dns import Resolver
from mailpolicy.auth.spf import check_spf, client_ip

UNUSED = Resolver(["127.0.0.1:9"], timeout=0.1)  # never queried by these tests


def test_client_ip_from_xforward_addr_forms():
    assert client_ip("192.0.2.1") == "192.0.2.1"
    assert client_ip("IPv6:2001:DB8::1") == "2001:db8::1"
    assert client_ip("[UNAVAILABLE]") is None
    assert client_ip("") is None and client_ip(None) is None


async def test_no_client_address_gives_none_not_a_loopback_check():
    r = await check_spf(UNUSED, None, "a@bank.example", "mx.bank.example")
    assert (r.result, r.identity, r.domain, r.reason) == ("none", "mailfrom", "bank.example",
                                                          "no client address")


async def test_null_sender_checks_postmaster_at_helo():
    r = await check_spf(UNUSED, None, "", "MX.Bank.Example.")
    assert (r.identity, r.domain, r.sender) == ("helo", "mx.bank.example",
                                                "postmaster@MX.Bank.Example")


async def test_null_sender_without_helo_has_nothing_to_check():
    r = await check_spf(UNUSED, "192.0.2.1", "<>", "")
    assert (r.result, r.identity, r.domain) == ("none", "helo", "")


async def test_non_null_sender_is_never_replaced_by_helo():
    r = await check_spf(UNUSED, None, "<a@bank.example>", "helo.evil.example")
    assert (r.identity, r.domain) == ("mailfrom", "bank.example")
