"""Authentication-Results (RFC 8601) via authres: build ours, spot incoming ones claiming our id."""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres
import authres.arc
import authres.dmarc

from mailpolicy.auth.dkim import DkimResult
from mailpolicy.auth.dmarc import DmarcResult
from mailpolicy.auth.spf import SpfResult

HEADER = "Authentication-Results"
_ID_RE = re.compile(r"^\s*(?:\([^)]*\)\s*)*([^\s;()]+)")
_SAFE = re.compile(r"[^\x21-\x7e]")


def _clean(value: str, limit: int = 253) -> str:
    """Property values go on the wire: printable ASCII, no spaces, bounded."""
    return _SAFE.sub("?", value)[:limit]


def _reason(text: str) -> str | None:
    """A reason= text (may come from DNS or the message): one line, no quotes or control
    characters, bounded, so it cannot break out of the header."""
    cleaned = re.sub(r'[\x00-\x1f\x7f"\\]', " ", text)[:200].strip()
    return cleaned or None


def build(authserv_id: str, spf: SpfResult | None, dkim: Sequence[DkimResult],
          dmarc: DmarcResult | None, arc_sealer: str | None = None) -> str:
    """The header value (without the field name), e.g.
    `mx.example; spf=pass smtp.mailfrom=a@b; dkim=pass header.d=b header.s=s1;
    dmarc=pass (p=reject dis=none) header.from=b`. `dmarc.disposition` must be the one
    applied; `arc_sealer`: a trusted ARC sealer whose valid chain overrode a DMARC failure
    (shown as `arc=pass (trusted sealer d) header.ams-d=d`)."""
    results: list = []
    if spf is not None:
        kw = {"smtp_mailfrom": _clean(spf.sender)} if spf.identity == "mailfrom" and spf.sender \
            else {"smtp_helo": _clean(spf.domain)} if spf.domain else {}
        results.append(authres.SPFAuthenticationResult(
            result=spf.result, reason=None if spf.result == "pass" else _reason(spf.reason),
            **kw))
    for d in dkim:
        kw = {}
        if d.domain:
            kw["header_d"] = _clean(d.domain)
        if d.selector:
            kw["header_s"] = _clean(d.selector, 63)
        if d.auid:
            kw["header_i"] = _clean(d.auid)
        if d.algorithm:
            kw["header_a"] = _clean(d.algorithm, 32)
        results.append(authres.DKIMAuthenticationResult(
            result=d.result, reason=_reason(d.reason), **kw))
    if not dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    if dmarc is not None:
        kw = {"header_from": _clean(dmarc.domain)} if dmarc.domain else {}
        comment = f"p={dmarc.policy} dis={dmarc.disposition}" \
            if dmarc.result in ("pass", "fail") else None
        explain = dmarc.result in ("temperror", "permerror") or (
            dmarc.result == "fail" and not dmarc.record_domain)
        reason = _reason(dmarc.reason) if explain else None
        results.append(authres.dmarc.DMARCAuthenticationResult(
            result=dmarc.result, result_comment=comment, reason=reason or None, **kw))
    if arc_sealer:
        sealer = _clean(arc_sealer)
        results.append(authres.arc.ARCAuthenticationResult(
            result="pass", result_comment=f"trusted sealer {sealer}", header_ams_d=sealer))
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    value = str(header)
    prefix = f"{HEADER}: "
    return value[len(prefix):] if value.startswith(prefix) else value


def authserv_id_of(value: str) -> str:
    """The authserv-id an Authentication-Results value claims (lowercase), "" if unreadable."""
    m = _ID_RE.match(value.replace("\r\n", " ").replace("\n", " "))
    return m.group(1).lower() if m else ""


def claims_our_id(value: str, authserv_id: str) -> bool:
    """True when an incoming header claims our authserv-id (forgery: strip it, RFC 8601 §5).
    An unreadable id is treated as ours, so nothing ambiguous survives."""
    found = authserv_id_of(value)
    return not found or found == authserv_id.lower()
