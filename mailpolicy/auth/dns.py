"""Async DNS lookups for SPF, DKIM and DMARC: dnspython resolver, per-query timeout, TTL cache."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailpolicy.config import Config

NEGATIVE_TTL_MAX = 300  # seconds a NXDOMAIN/NODATA answer is kept at most
NEGATIVE_TTL_DEFAULT = 60  # when the answer carries no SOA
POSITIVE_TTL_MAX = 3600

Status = Literal["ok", "nodata", "nxdomain"]


class DnsTempError(Exception):
    """A temporary DNS failure (timeout, SERVFAIL, refused, network): try again later."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One DNS answer. `records` are text for A/AAAA/MX/PTR, raw bytes for TXT (strings joined)."""

    status: Status
    records: tuple = ()

    @property
    def exists(self) -> bool:
        """The name exists (RFC 8020: only NXDOMAIN says it does not)."""
        return self.status != "nxdomain"

    def texts(self) -> list[str]:
        """TXT records as str (invalid UTF-8 replaced)."""
        return [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r)
                for r in self.records]


def parse_nameserver(value: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (host, port)."""
    v = value.strip()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if v.count(":") == 1:
        host, _, port = v.partition(":")
        return host, int(port)
    return v, 53


class Resolver:
    """dnspython async resolver with a small TTL-honouring cache shared by all checks."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 3.0,
                 cache_size: int = 10000) -> None:
        if nameservers:
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(h, port=p)
                               for h, p in map(parse_nameserver, nameservers)]
        else:
            try:
                res = dns.asyncresolver.Resolver()  # the system's resolv.conf
            except dns.resolver.NoResolverConfiguration:
                res = dns.asyncresolver.Resolver(configure=False)
                res.nameservers = ["127.0.0.1"]  # resolv.conf's own default
        res.timeout = timeout
        res.lifetime = timeout
        res.cache = None
        self._res = res
        self.timeout = timeout
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self.queries = 0  # network queries made (cache misses), for tests and metrics

    @classmethod
    def from_config(cls, cfg: Config) -> Resolver:
        return cls(cfg.dns.nameservers, cfg.dns.timeout_seconds, cfg.dns.cache_size)

    def clear_cache(self) -> None:
        self._cache.clear()

    async def query(self, name: str, rtype: str) -> Answer:
        """Look up `name`/`rtype`; NXDOMAIN and NODATA are answers, temporary failures raise."""
        key = (name.lower().rstrip("."), rtype.upper())
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
            del self._cache[key]
        answer, ttl = await self._lookup(key[0], key[1])
        if self.cache_size > 0 and ttl > 0:
            self._cache[key] = (now + ttl, answer)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return answer

    async def txt(self, name: str) -> Answer:
        return await self.query(name, "TXT")

    async def _lookup(self, name: str, rtype: str) -> tuple[Answer, float]:
        try:
            qname = _qname(name)
        except (dns.exception.DNSException, UnicodeError):
            return Answer("nxdomain"), 0  # not a name DNS can carry: it cannot exist
        self.queries += 1
        try:
            ans = await self._res.resolve(qname, rtype, raise_on_no_answer=False,
                                          search=False)
        except dns.resolver.NXDOMAIN as e:
            return Answer("nxdomain"), _negative_ttl(e.responses().values())
        except dns.resolver.YXDOMAIN:
            return Answer("nxdomain"), 0
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise DnsTempError(f"{name} {rtype}: {e.__class__.__name__}") from None
        except dns.exception.DNSException as e:
            raise DnsTempError(f"{name} {rtype}: {e}") from None
        except OSError as e:
            raise DnsTempError(f"{name} {rtype}: {e.strerror or e}") from None
        if ans.rrset is None:
            return Answer("nodata"), _negative_ttl([ans.response])
        records = tuple(_record(rd) for rd in ans.rrset)
        ttl = min(ans.rrset.ttl, POSITIVE_TTL_MAX)
        return Answer("ok", records), ttl


def _qname(name: str) -> dns.name.Name:
    """Labels taken literally (SPF macros may expand to `%`, spaces or backslashes)."""
    if not name.isascii():
        return dns.name.from_unicode(name)
    return dns.name.Name([label.encode() for label in name.split(".")] + [b""])


def _record(rd) -> str | bytes:
    t = rd.rdtype
    if t == dns.rdatatype.TXT:
        return b"".join(rd.strings)
    if t == dns.rdatatype.MX:
        return rd.exchange.to_text(omit_final_dot=True)
    if t in (dns.rdatatype.PTR, dns.rdatatype.CNAME):
        return rd.target.to_text(omit_final_dot=True)
    if t in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return rd.address
    return rd.to_text()


def _negative_ttl(responses) -> float:
    for resp in responses:
        for rrset in getattr(resp, "authority", ()):
            if rrset.rdtype == dns.rdatatype.SOA:
                return min(rrset.ttl, rrset[0].minimum, NEGATIVE_TTL_MAX)
    return NEGATIVE_TTL_DEFAULT
