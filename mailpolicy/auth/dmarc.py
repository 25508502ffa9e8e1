"""DMARC (RFC 9989), pure: From domains, DNS tree walk, record tags, alignment, result, disposition.

DNS answers come through an injected async `lookup(name) -> Txt` (TXT at a name) and
`exists(domain) -> bool | None` (None: temporary failure); nothing here does I/O itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from email.policy import default as _email_policy
from email.utils import getaddresses
from typing import Literal

from mailpolicy.core.addresses import AddressError, normalize_domain

MAX_WALK_QUERIES = 8  # RFC 9989 §4.10: at most 8 queries per tree walk
WALK_JUMP_LABELS = 7  # a longer name jumps straight to its 7-label suffix
MAX_FROM_DOMAINS = 8  # distinct RFC5322.From domains evaluated per message (DoS guard)

POLICIES = ("none", "quarantine", "reject")
_RANK = {"none": 0, "quarantine": 1, "reject": 2}
_OTHER_RANK = {"pass": 0, "none": 1, "permerror": 2, "temperror": 3, "fail": 4}
_TAG_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*)$", re.S)
_VERSION_RE = re.compile(r"^[Vv][ \t]*=[ \t]*DMARC1$")  # the value is case-sensitive
# `Name <local@domain>`, `"Name" <local@domain>` or `local@domain` with nothing unusual: the two
# full parsers would agree, so they are skipped (they cost ~0.5 ms per message)
_SIMPLE_FROM_RE = re.compile(
    r'^[ \t]*(?:(?:"[^"\\\r\n]*"|[A-Za-z0-9!#$%&\'*+/=?^_`{|}~. \t-]*)[ \t]*'
    r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@([A-Za-z0-9.-]+)>"
    r"|[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@([A-Za-z0-9.-]+))[ \t]*$")
_MAILTO_RE = re.compile(r"^mailto:[^@\s,!]+@[A-Za-z0-9.-]+(?:![0-9]+[kmgt]?)?$", re.I)


@dataclass(frozen=True, slots=True)
class Txt:
    """The TXT answer at one name."""

    status: Literal["ok", "nodata", "nxdomain", "temperror"]
    texts: tuple[str, ...] = ()


Lookup = Callable[[str], Awaitable[Txt]]
Exists = Callable[[str], Awaitable[bool | None]]


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed DMARC record; invalid tag values are already replaced by defaults (§4.8)."""

    p: str | None = None  # None: missing or invalid
    sp: str | None = None
    np: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    t: bool = False
    psd: str = "u"
    rua: tuple[str, ...] = ()
    pct: int | None = None  # historic (RFC 7489); only pct=0 is honoured, as t=y
    errors: tuple[str, ...] = ()


def parse_record(text: str) -> Record | None:
    """Parse a TXT string; None when it is not a DMARC record (must start with `v=DMARC1`)."""
    parts = [p.strip(" \t") for p in text.split(";")]
    if not parts or not _VERSION_RE.match(parts[0]):
        return None
    tags: dict[str, str] = {}
    errors: list[str] = []
    for part in parts[1:]:
        if not part:
            continue
        m = _TAG_RE.match(part)
        if not m:
            errors.append(f"syntax error: {part!r}")
            continue
        name, value = m.group(1).lower(), m.group(2).strip(" \t")
        if name in tags:
            errors.append(f"duplicate tag {name}")
            continue
        tags[name] = value
    rec: dict = {}

    def choice(name: str, allowed: Sequence[str]) -> str | None:
        if name not in tags:
            return None
        v = tags[name].lower()
        if v in allowed:
            return v
        errors.append(f"invalid {name}={tags[name]!r}")
        return None

    for name in ("p", "sp", "np"):
        rec[name] = choice(name, POLICIES)
    rec["adkim"] = choice("adkim", ("r", "s")) or "r"
    rec["aspf"] = choice("aspf", ("r", "s")) or "r"
    rec["t"] = choice("t", ("y", "n")) == "y"
    rec["psd"] = choice("psd", ("y", "n", "u")) or "u"
    if "rua" in tags:
        uris = tuple(u.strip() for u in tags["rua"].split(","))
        if all(_MAILTO_RE.match(u) for u in uris):
            rec["rua"] = uris
        else:
            errors.append(f"invalid rua={tags['rua']!r}")
    if "pct" in tags:
        if tags["pct"].isdigit() and int(tags["pct"]) <= 100:
            rec["pct"] = int(tags["pct"])
        else:
            errors.append(f"invalid pct={tags['pct']!r}")
    return Record(**rec, errors=tuple(errors))


def walk_targets(domain: str) -> list[str]:
    """The names the RFC 9989 tree walk queries (below `_dmarc.`), most specific first."""
    labels = domain.split(".")
    out = [domain]
    n = len(labels)
    while n > 1 and len(out) < MAX_WALK_QUERIES:
        n = min(n - 1, WALK_JUMP_LABELS)
        out.append(".".join(labels[-n:]))
    return out


async def _records_at(target: str, lookup: Lookup) -> list[Record] | None:
    """The DMARC records at `_dmarc.<target>`; None on a temporary DNS failure."""
    ans = await lookup(f"_dmarc.{target}")
    if ans.status == "temperror":
        return None
    return [r for r in map(parse_record, ans.texts) if r is not None]


@dataclass(frozen=True, slots=True)
class Discovery:
    status: Literal["found", "none", "temperror"]
    record: Record | None = None
    at: str = ""  # the domain whose _dmarc record was used


async def discover_policy(domain: str, lookup: Lookup) -> Discovery:
    """Policy discovery: the first name in the walk holding exactly one DMARC record
    (several records at one name are all discarded and the walk continues)."""
    for target in walk_targets(domain):
        records = await _records_at(target, lookup)
        if records is None:
            return Discovery("temperror", at=target)
        if len(records) == 1:
            return Discovery("found", records[0], target)
    return Discovery("none")


async def organizational_domain(domain: str, lookup: Lookup) -> str | None:
    """RFC 9989 §4.10.2 by tree walk: psd=n ends it here, psd=y one label below, otherwise the
    record with the fewest labels, else the domain itself. None on a temporary DNS failure."""
    labels = domain.split(".")
    found: list[str] = []
    for target in walk_targets(domain):
        records = await _records_at(target, lookup)
        if records is None:
            return None
        if len(records) != 1:
            continue
        rec = records[0]
        if rec.psd == "n":
            return target
        if rec.psd == "y" and target != domain:
            return ".".join(labels[-(target.count(".") + 2):])
        found.append(target)
    return found[-1] if found else domain


class Aligner:
    """Identifier alignment with a per-message memo of Organizational Domains."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self._org: dict[str, str | None] = {}

    async def org(self, domain: str) -> str | None:
        if domain not in self._org:
            self._org[domain] = await organizational_domain(domain, self.lookup)
        return self._org[domain]

    async def aligned(self, ident: str, author: str, mode: str) -> bool | None:
        """Strict: equal; relaxed: same Organizational Domain. None when DNS failed."""
        ident, author = ident.lower().rstrip("."), author.lower().rstrip(".")
        if not ident or not author:
            return False
        if ident == author:
            return True
        if mode == "s" or ident.rsplit(".", 1)[-1] != author.rsplit(".", 1)[-1]:
            return False
        a, b = await self.org(ident), await self.org(author)
        if a is None or b is None:
            return None
        return a == b


@dataclass(frozen=True, slots=True)
class Identifier:
    """An authenticated identifier: SPF (MAIL FROM or HELO domain) or a DKIM d=."""

    result: str
    domain: str


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str  # pass fail none temperror permerror
    domain: str = ""  # the author domain (A-labels)
    policy: str = "none"  # the policy that applied (p, sp or np)
    disposition: str = "none"  # after t=y: none quarantine reject
    reason: str = ""
    record_domain: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False
    test_mode: bool = False
    domains: tuple[str, ...] = field(default=())  # every author domain evaluated

    @property
    def severity(self) -> tuple[int, int, int, int]:
        return (self.result == "fail", _RANK[self.disposition], _RANK[self.policy],
                _OTHER_RANK[self.result])


def _raw_domains(value: str) -> list[str]:
    """The domain part of every address in one From value ("" for an address without one)."""
    simple = _SIMPLE_FROM_RE.match(value)
    if simple:
        return [simple.group(1) or simple.group(2)]
    raw: list[str] = []
    try:
        header = _email_policy.header_factory("from", value)
        raw += [a.domain for a in header.addresses if a.username or a.domain]
    except Exception:  # the strict parser gives up on some hostile input; the other still runs
        pass
    raw += [addr.rpartition("@")[2] if "@" in addr else ""
            for _, addr in getaddresses([value]) if addr]
    return raw


def author_domains(from_values: Sequence[str]) -> tuple[list[str], str]:
    """All RFC5322.From domains (A-labels, deduplicated, in order) and an error text ("" if
    none). Both of Python's address parsers are used so neither one's misreading hides a domain."""
    if not from_values:
        return [], "no From header"
    domains: list[str] = []
    error = ""
    for value in from_values:
        raw = _raw_domains(value)
        if not raw:
            error = error or "From header without an address"
        for d in raw:
            if not d:
                error = error or "From address without a domain"
                continue
            try:
                nd = normalize_domain(d)
            except AddressError:
                error = error or f"invalid From domain {d[:64]!r}"
                continue
            if nd not in domains:
                domains.append(nd)
    if len(domains) > MAX_FROM_DOMAINS:
        return domains[:MAX_FROM_DOMAINS], f"more than {MAX_FROM_DOMAINS} From domains"
    return domains, error


def _test_downgrade(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


async def evaluate_domain(author: str, spf: Identifier, dkim: Sequence[Identifier],
                          lookup: Lookup, exists: Exists, aligner: Aligner) -> DmarcResult:
    """DMARC for one author domain."""
    disc = await discover_policy(author, lookup)
    if disc.status == "temperror":
        return DmarcResult("temperror", author, reason=f"DNS failure at _dmarc.{disc.at}")
    if disc.status == "none" or disc.record is None:
        return DmarcResult("none", author, reason="no DMARC record")
    rec, at = disc.record, disc.at
    base = DmarcResult("none", author, record_domain=at)
    if rec.p is None and not rec.rua:
        return replace(base, result="permerror", reason="record has no valid p= and no rua=")
    temp = False
    dkim_ok = False
    for d in dkim:
        if d.result not in ("pass", "temperror"):
            continue
        ok = await aligner.aligned(d.domain, author, rec.adkim)
        temp |= ok is None or (ok and d.result == "temperror")
        dkim_ok |= bool(ok) and d.result == "pass"
    spf_ok = False
    if spf.result in ("pass", "temperror"):
        ok = await aligner.aligned(spf.domain, author, rec.aspf)
        temp |= ok is None or (ok and spf.result == "temperror")
        spf_ok = bool(ok) and spf.result == "pass"
    base = replace(base, spf_aligned=spf_ok, dkim_aligned=dkim_ok)
    if spf_ok or dkim_ok:
        return replace(base, result="pass", policy=rec.p or "none")
    if temp:
        return replace(base, result="temperror", policy=rec.p or "none",
                       reason="temporary failure of an alignable identifier")
    policy = rec.p or "none"  # a record with rua= but no valid p= acts as p=none
    if at != author and rec.p is not None:
        policy = rec.sp or rec.p
        if rec.np is not None and await exists(author) is False:
            policy = rec.np
    test = rec.t or (rec.pct == 0)
    dis = _test_downgrade(policy) if test else policy
    return replace(base, result="fail", policy=policy, disposition=dis, test_mode=test,
                   reason="no aligned identifier passed")


async def evaluate(from_values: Sequence[str], spf: Identifier, dkim: Sequence[Identifier],
                   lookup: Lookup, exists: Exists) -> DmarcResult:
    """DMARC for a message: each From domain is evaluated; the strictest failing result wins."""
    domains, error = author_domains(from_values)
    aligner = Aligner(lookup)
    results = [await evaluate_domain(d, spf, dkim, lookup, exists, aligner) for d in domains]
    if error:
        dis = "quarantine" if error.startswith("more than") else "none"
        results.append(DmarcResult("fail", domains[0] if domains else "", disposition=dis,
                                   policy=dis, reason=error))
    if not results:
        return DmarcResult("fail", reason="no From domain")
    worst = max(results, key=lambda r: r.severity)
    return replace(worst, domains=tuple(domains))
