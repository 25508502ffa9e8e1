"""The pure autoresponder decision (RFC 3834 / RFC 5230, as Pigeonhole vacation): reply or not."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address, split_extension
from mailpolicy.core.model import Autoresponder, Mailbox

Headers = Sequence[tuple[str, str]]

MAX_HEADER_BYTES = 256 * 1024  # only the header block is read; more than this is not parsed
MAX_HEADERS = 1000

# RFC 5230 §4.6 suggested list; postmaster is deliberately absent ("managed by people").
SYSTEM_LOCALS = frozenset({"mailer-daemon", "listserv", "majordomo"})
_NOREPLY_RE = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)(?:[-_.+=].*)?$"
    r"|[-_.](?:no[-_.]?reply|bounces?)$")
_COMMENT_RE = re.compile(r"\([^()]*\)")
_RECIPIENT_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_PRECEDENCE_SUPPRESS = frozenset({"bulk", "list", "junk"})
_XARS_SUPPRESS = frozenset({"all", "oof"})
QUARANTINE_HEADER = "x-mailpolicy-quarantine"  # set (and stripped from input) only by our filter


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to reply, and the name of the rule that decided."""

    send: bool
    rule: str


REPLY = Decision(True, "reply")


def parse_headers(message: bytes, limit: int = MAX_HEADER_BYTES) -> list[tuple[str, str]]:
    """The unfolded header fields of a raw message as (name, value), in order. Bytes are
    decoded as UTF-8 with replacement; stops at the first empty line, `limit` bytes or
    MAX_HEADERS fields. Lines that are not fields (no colon) are skipped."""
    end = message.find(b"\r\n\r\n", 0, limit)
    end_lf = message.find(b"\n\n", 0, limit)
    cut = min(e for e in (end, end_lf, min(len(message), limit)) if e >= 0)
    block = message[:cut].decode("utf-8", "replace")
    fields: list[tuple[str, str]] = []
    for line in re.split(r"\r?\n", block):
        if not line:
            break
        if line[0] in " \t":
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            continue
        if len(fields) >= MAX_HEADERS:
            break
        fields.append((name, value.strip()))
    return fields


def get_all(headers: Headers, name: str) -> list[str]:
    """Every value of the header `name` (case-insensitive), in order."""
    n = name.lower()
    return [v for k, v in headers if k.lower() == n]


def _fold_address(address: str) -> tuple[str, str] | None:
    """(lowercased local part without +extension, A-label domain) or None if not an address."""
    try:
        local, domain = split_address(address)
        return split_extension(local.lower())[0], normalize_domain(domain)
    except AddressError:
        return None


def own_addresses(mailbox: Mailbox) -> frozenset[tuple[str, str]]:
    """The mailbox address and its aliases, folded for comparison."""
    return frozenset((name, mailbox.domain) for name in (mailbox.name, *mailbox.aliases))


def is_system_sender(local: str) -> bool:
    """MAILER-DAEMON, LISTSERV, majordomo, owner-*, *-request, no-reply/bounce style."""
    base = split_extension(local.lower())[0]
    return (base in SYSTEM_LOCALS or base.startswith("owner-") or base.endswith("-request")
            or bool(_NOREPLY_RE.search(base)))


def _strip_comments(value: str) -> str:
    for _ in range(8):  # nested comments, bounded
        new = _COMMENT_RE.sub(" ", value)
        if new == value:
            break
        value = new
    return value


def _auto_submitted(headers: Headers) -> bool:
    """True when some Auto-Submitted field has a keyword other than `no` (RFC 3834 §5: the
    field is `[CFWS] keyword [CFWS] *(";" parameter)`, so `no (comment)` is still `no`)."""
    for value in get_all(headers, "auto-submitted"):
        keyword = _strip_comments(value).split(";", 1)[0].strip().lower()
        if keyword != "no":
            return True
    return False


def _precedence(headers: Headers) -> bool:
    for value in get_all(headers, "precedence"):
        words = _strip_comments(value).split()
        if words and words[0].lower() in _PRECEDENCE_SUPPRESS:
            return True
    return False


def _list_header(headers: Headers) -> bool:
    return any(name.lower().startswith("list-") for name, _ in headers)


def _suppress_requested(headers: Headers) -> bool:
    for value in get_all(headers, "x-auto-response-suppress"):
        if {f.strip().lower() for f in value.split(",")} & _XARS_SUPPRESS:
            return True
    return False


def _spam(headers: Headers) -> bool:
    if any(v.strip().lower() == "yes" for v in get_all(headers, "x-spam-flag")):
        return True
    return any(re.match(r"\s*yes\b", v, re.I) for v in get_all(headers, "x-spam-status"))


def _recipients(headers: Headers) -> Iterable[tuple[str, str]]:
    values = [v for name in _RECIPIENT_HEADERS for v in get_all(headers, name)]
    for _display, addr in getaddresses(values):
        folded = _fold_address(addr) if addr else None
        if folded:
            yield folded


def addressed_alias(mailbox: Mailbox, headers: Headers) -> str | None:
    """The alias address the sender wrote to (To/Cc/...), when the message names one of the
    mailbox's aliases and not its own address; None otherwise. The reply then comes from that
    alias, so the main address stays private."""
    found = set(_recipients(headers))
    if (mailbox.name, mailbox.domain) in found:
        return None
    for alias in mailbox.aliases:
        if (alias, mailbox.domain) in found:
            return f"{alias}@{mailbox.domain}"
    return None


def in_window(ar: Autoresponder, today: dt.date) -> str | None:
    """None when today is inside [start, end] (both inclusive), else the rule name."""
    if ar.start is not None and today < ar.start:
        return "before-start"
    if ar.end is not None and today > ar.end:
        return "after-end"
    return None


def decide(mailbox: Mailbox, autoresponder: Autoresponder | None, *, today: dt.date,
           sender: str, headers: Headers, check_recipient: bool = True) -> Decision:
    """Decide whether `mailbox` answers a message from envelope `sender` with these headers.
    The rules run in order; the first that holds is the verdict. The once-per-interval rule is
    not here: it is a race-safe claim in the store (see send.py)."""
    ar = autoresponder
    if ar is None or not ar.enabled:
        return Decision(False, "disabled")
    if not ar.message.strip():
        return Decision(False, "no-message")
    if (window := in_window(ar, today)) is not None:
        return Decision(False, window)
    if sender.strip() in ("", "<>"):
        return Decision(False, "null-sender")
    folded = _fold_address(sender)
    if folded is None:
        return Decision(False, "invalid-sender")
    if is_system_sender(split_address(sender)[0]):
        return Decision(False, "system-sender")
    mine = own_addresses(mailbox)
    if folded in mine:
        return Decision(False, "own-address")
    if _auto_submitted(headers):
        return Decision(False, "auto-submitted")
    if _precedence(headers):
        return Decision(False, "precedence")
    if _list_header(headers):
        return Decision(False, "list-header")
    if _suppress_requested(headers):
        return Decision(False, "auto-response-suppress")
    if get_all(headers, QUARANTINE_HEADER):
        return Decision(False, "dmarc-quarantine")
    if _spam(headers):
        return Decision(False, "spam")
    if check_recipient and not any(r in mine for r in _recipients(headers)):
        return Decision(False, "not-personal")
    return REPLY
