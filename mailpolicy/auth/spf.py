"""SPF (RFC 7208) through spftrace over our resolver: MAIL FROM, and HELO only for a null sender."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import spftrace

from mailpolicy.auth.dns import DnsTempError, Resolver

SPF_TIME_LIMIT = 20.0  # seconds for one whole check_host() (RFC 7208 §4.6.4 asks for >= 20)
SPF_MAX_QUERIES = 40  # hard cap on DNS queries of one evaluation


class _Transport(spftrace.BaseResolver):
    """spftrace's DNS transport on top of mailpolicy.auth.dns.Resolver (shared cache)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def _lookup(self, name: str, rtype: str) -> tuple[str, list[str]]:
        try:
            ans = await self.resolver.query(name, rtype)
        except DnsTempError:
            return "SERVFAIL", []
        if ans.status == "nxdomain":
            return "NXDOMAIN", []
        if rtype == "TXT":
            return "NOERROR", ans.texts()
        return "NOERROR", [str(r) for r in ans.records]


@dataclass(frozen=True, slots=True)
class SpfResult:
    """Outcome of the SPF check that counts for DMARC."""

    result: str  # pass fail softfail neutral none temperror permerror
    identity: str  # "mailfrom" or "helo"
    domain: str  # the checked domain ("" when nothing could be checked)
    sender: str  # the identity checked: MAIL FROM, or postmaster@HELO for a null sender
    reason: str = ""


def client_ip(addr: str | None) -> str | None:
    """XFORWARD ADDR (may carry an `IPv6:` prefix) -> a normalised IP, or None."""
    if not addr:
        return None
    a = addr.strip()
    if a.lower().startswith("ipv6:"):
        a = a[5:]
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        return None


async def check_spf(resolver: Resolver, ip: str | None, mail_from: str, helo: str, *,
                    receiver: str = "mailpolicy", time_limit: float = SPF_TIME_LIMIT) -> SpfResult:
    """Check SPF for the MAIL FROM identity; for a null MAIL FROM, for postmaster@HELO.

    A HELO result never stands in for a non-null MAIL FROM (CVE-2019-20790)."""
    sender = mail_from.strip().strip("<>")
    helo = (helo or "").strip().rstrip(".")
    if sender:
        identity, domain = "mailfrom", sender.rpartition("@")[2].lower().rstrip(".")
    else:
        identity, domain = "helo", helo.lower()
        sender = f"postmaster@{helo}" if helo else ""
    if not domain:
        return SpfResult("none", identity, "", sender, "no identity to check")
    if ip is None:
        return SpfResult("none", identity, domain, sender, "no client address")
    r = await spftrace.Evaluator(
        _Transport(resolver),
        spftrace.Limits(time_limit=time_limit, max_queries=SPF_MAX_QUERIES),
        receiver=receiver,
    ).evaluate(ip, sender, helo)
    return SpfResult(r.result, identity, domain, sender, r.explanation or "")
