"""In-process authoritative DNS server (UDP+TCP, 127.0.0.1 port 0) for the auth tests, and
tests of mailpolicy.auth.dns against it."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest

from mailpolicy.auth.dns import Answer, DnsTempError, Resolver

TIMEOUT = "TIMEOUT"  # marker entry: queries for a type with no record before it time out


def _rdata(rtype: str, value: Any) -> dns.rdata.Rdata:
    rdtype = dns.rdatatype.from_text(rtype)
    if rtype in ("TXT", "SPF"):
        parts = value if isinstance(value, list | tuple) else [value]
        chunks: list[bytes] = []
        for p in parts:
            b = p if isinstance(p, bytes) else str(p).encode("utf-8")
            chunks.extend(b[i:i + 255] for i in range(0, len(b), 255)) if b else chunks.append(b)
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, rdtype, chunks or [b""])
    if rtype == "MX":
        pref, host = value
        text = f"{pref} {str(host).rstrip('.')}."
    elif rtype in ("PTR", "CNAME"):
        text = str(value).rstrip(".") + "."
    else:
        text = str(value)
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)


def _key(name: dns.name.Name) -> str:
    return ".".join(label.decode("utf-8", "replace") for label in name.labels if label).lower()


class ZoneServer:
    """Answers from `records`: {name: [(rtype, value) | "TIMEOUT", ...]}.

    Unknown names are NXDOMAIN (names with descendants are NODATA). A "TIMEOUT" entry makes a query
    for a type without a record listed before it fail: SERVFAIL, or no answer when `drop` is set.
    CNAMEs are followed inside the data. Answers too big for UDP are truncated (TC)."""

    def __init__(self, records: dict[str, list] | None = None, ttl: int = 300,
                 drop: bool = False) -> None:
        self.records: dict[str, list] = {}
        self.ttl = ttl
        self.drop = drop
        self.queries: list[tuple[str, str]] = []
        for name, entries in (records or {}).items():
            self.add(name, *entries)

    def add(self, name: str, *entries: Any) -> None:
        self.records.setdefault(name.lower().rstrip("."), []).extend(entries)

    def set(self, name: str, *entries: Any) -> None:
        self.records[name.lower().rstrip(".")] = list(entries)

    def _lookup(self, name: str, rtype: str) -> tuple[str, list]:
        entries = self.records.get(name)
        if entries is None:
            if any(k.endswith("." + name) for k in self.records):
                return "NOERROR", []
            return "NXDOMAIN", []
        found: list = []
        for e in entries:
            if e == TIMEOUT:
                if not found:
                    return "TIMEOUT", []
                break
            if e[0] == rtype:
                found.append(e[1])
        return "NOERROR", found

    def answer(self, wire: bytes, max_size: int = 65535) -> bytes | None:
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        qs = q.question[0]
        rtype = dns.rdatatype.to_text(qs.rdtype)
        name = _key(qs.name)
        self.queries.append((name, rtype))
        owner = qs.name
        for _ in range(8):  # bounded CNAME chase
            status, values = self._lookup(name, rtype)
            if status == "TIMEOUT":
                if self.drop:
                    return None
                r.set_rcode(dns.rcode.SERVFAIL)
                r.answer.clear()
                return r.to_wire()
            if values:
                rds = [_rdata(rtype, v) for v in values]
                r.answer.append(dns.rrset.from_rdata_list(owner, self.ttl, rds))
                break
            cname = None if rtype == "CNAME" else self._lookup(name, "CNAME")[1]
            if cname:
                target = dns.name.from_text(str(cname[0]).rstrip(".") + ".")
                r.answer.append(dns.rrset.from_rdata_list(
                    owner, self.ttl, [_rdata("CNAME", cname[0])]))
                owner, name = target, _key(target)
                continue
            if status == "NXDOMAIN" and not r.answer:
                r.set_rcode(dns.rcode.NXDOMAIN)
            break
        if not r.answer or r.rcode() == dns.rcode.NXDOMAIN:
            soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                                      "ns.test. hostmaster.test. 1 3600 600 86400 60")
            r.authority.append(dns.rrset.from_rdata_list(dns.name.from_text("test."), 60, [soa]))
        try:
            return r.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            r.answer.clear()
            r.authority.clear()
            r.flags |= dns.flags.TC
            return r.to_wire()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ZoneServer:
        for attempt in range(20):  # the UDP port may be taken for TCP: pick another
            try:
                return await self._start(host, port)
            except OSError:
                self.udp.close()
                if port or attempt == 19:
                    raise
        raise AssertionError("unreachable")

    async def _start(self, host: str, port: int) -> ZoneServer:
        loop = asyncio.get_running_loop()
        srv = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data, addr):
                try:
                    q = dns.message.from_wire(data)
                    size = max(512, q.payload if q.edns >= 0 else 512)
                    out = srv.answer(data, size)
                except Exception:
                    return
                if out is not None:
                    self.t.sendto(out, addr)

        self.udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(host, port))
        self.port = self.udp.get_extra_info("sockname")[1]

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                    out = srv.answer(await reader.readexactly(n))
                    if out is None:
                        continue
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.tcp = await asyncio.start_server(tcp, host, self.port)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
async def zone():
    srv = await ZoneServer().start()
    yield srv
    srv.close()


async def test_dns_answer_nxdomain_nodata_and_records(zone):
    zone.add("a.example.test", ("TXT", "hello"), ("TXT", ["two ", "strings"]), ("A", "192.0.2.1"))
    zone.add("x.y.example.test", ("A", "192.0.2.2"))
    res = Resolver([zone.address], timeout=1.0)
    ans = await res.txt("a.example.test")
    assert ans.status == "ok" and sorted(ans.records) == [b"hello", b"two strings"]
    assert (await res.query("a.example.test", "A")).records == ("192.0.2.1",)
    assert await res.query("a.example.test", "MX") == Answer("nodata")
    assert await res.txt("nope.example.test") == Answer("nxdomain")
    assert (await res.txt("y.example.test")).status == "nodata"  # empty non-terminal exists


async def test_dns_servfail_is_temporary_error(zone):
    zone.add("broken.example.test", TIMEOUT)
    res = Resolver([zone.address], timeout=1.0)
    with pytest.raises(DnsTempError):
        await res.txt("broken.example.test")


async def test_dns_timeout_is_temporary_error_within_deadline():
    srv = await ZoneServer({"slow.example.test": [TIMEOUT]}, drop=True).start()
    try:
        res = Resolver([srv.address], timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(DnsTempError):
            await res.txt("slow.example.test")
        assert time.monotonic() - t0 < 2.0
    finally:
        srv.close()


async def test_dns_cache_honours_ttl():
    srv = await ZoneServer({"c.example.test": [("TXT", "v1")]}, ttl=1).start()
    try:
        res = Resolver([srv.address], timeout=1.0)
        assert (await res.txt("c.example.test")).records == (b"v1",)
        srv.set("c.example.test", ("TXT", "v2"))
        assert (await res.txt("C.Example.Test.")).records == (b"v1",)  # cached
        assert res.queries == 1
        await asyncio.sleep(1.1)
        assert (await res.txt("c.example.test")).records == (b"v2",)
        assert res.queries == 2
    finally:
        srv.close()


async def test_dns_large_answer_falls_back_to_tcp(zone):
    zone.add("big.example.test", *[("TXT", "x" * 250 + str(i)) for i in range(20)])
    res = Resolver([zone.address], timeout=1.0)
    assert len((await res.txt("big.example.test")).records) == 20


def test_dns_nameserver_forms():
    from mailpolicy.auth.dns import parse_nameserver

    assert parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
