"""Golden transcripts for the socketmap tables: query netstring in, reply netstring out."""

from __future__ import annotations

import asyncio

import pytest
from memdir import MemoryDirectory

from mailpolicy.core.model import DefaultAction, Domain, Mailbox
from mailpolicy.socketmap.protocol import Parser, encode_query
from mailpolicy.socketmap.server import SocketmapService

DIRECTORY = MemoryDirectory(
    [Domain("example.com", outbound_ip="192.0.2.10"),
     Domain("xn--bcher-kva.example", outbound_ip="2001:db8::1"),
     Domain("discard.example", default_action=DefaultAction.DISCARD),
     Domain("redir.example", default_action=DefaultAction.REDIRECT_DOMAIN,
            redirect_to="example.com")],
    [Mailbox("info", "example.com", aliases=("sales",)),
     Mailbox("off", "example.com", enabled=False),
     Mailbox("anna", "xn--bcher-kva.example")])


def transcript(data: bytes, directory: object = DIRECTORY) -> bytes:
    service = SocketmapService(directory, 100_000)  # type: ignore[arg-type]

    async def run() -> bytes:
        return b"".join([(await service.answer(p)).encode() for p in Parser().feed(data)])

    return asyncio.run(run())


def q(name: str, key: str) -> bytes:
    return encode_query(name, key)


GOLDEN = [
    ("domain", q("domains", "example.com"), b"14:OK example.com,"),
    ("domain, any case, trailing dot", q("domains", "EXAMPLE.com."), b"14:OK example.com,"),
    ("IDNA domain, U-label", q("domains", "bücher.example"), b"24:OK xn--bcher-kva.example,"),
    ("domain not ours", q("domains", "elsewhere.example"), b"9:NOTFOUND ,"),
    ("parent-domain probe", q("domains", ".example.com"), b"9:NOTFOUND ,"),
    ("address in domains map", q("domains", "info@example.com"), b"9:NOTFOUND ,"),
    ("mailbox", q("mailboxes", "info@example.com"), b"19:OK info@example.com,"),
    ("mailbox, case and +ext", q("mailboxes", "INFO+tag@Example.COM"),
     b"19:OK info@example.com,"),
    ("alias", q("mailboxes", "sales@example.com"), b"19:OK info@example.com,"),
    ("disabled mailbox exists (the policy says 550 5.2.1)", q("mailboxes", "off@example.com"),
     b"18:OK off@example.com,"),
    ("unknown in reject domain", q("mailboxes", "nobody@example.com"), b"9:NOTFOUND ,"),
    ("unknown in discard domain", q("mailboxes", "Any@discard.example"),
     b"22:OK any@discard.example,"),
    ("unknown in redirect-domain domain", q("mailboxes", "x@redir.example"),
     b"9:NOTFOUND ,"),  # x@example.com does not exist: the chain leads nowhere
    ("redirect-domain to a mailbox", q("mailboxes", "info@redir.example"),
     b"21:OK info@redir.example,"),
    ("foreign address", q("mailboxes", "info@elsewhere.example"), b"9:NOTFOUND ,"),
    ("bare domain", q("mailboxes", "example.com"), b"9:NOTFOUND ,"),
    ("@domain partial key", q("mailboxes", "@example.com"), b"9:NOTFOUND ,"),
    ("@domain partial key, accepting domain", q("mailboxes", "@discard.example"),
     b"9:NOTFOUND ,"),
    ("bare local part", q("mailboxes", "info"), b"9:NOTFOUND ,"),
    ("sender transport", q("sender-transport", "info@example.com"),
     b"20:OK mpout-192-0-2-10:,"),
    ("sender transport, any local part", q("sender-transport", "Whoever+x@EXAMPLE.com"),
     b"20:OK mpout-192-0-2-10:,"),
    ("sender transport, IPv6", q("sender-transport", "anna@bücher.example"),
     b"49:OK mpout-2001-0db8-0000-0000-0000-0000-0000-0001:,"),
    ("sender transport, no outbound IP", q("sender-transport", "a@discard.example"),
     b"9:NOTFOUND ,"),
    ("sender transport, foreign", q("sender-transport", "a@elsewhere.example"),
     b"9:NOTFOUND ,"),
    ("sender transport, null sender", q("sender-transport", "<>"), b"9:NOTFOUND ,"),
    ("sender transport, empty", q("sender-transport", ""), b"9:NOTFOUND ,"),
    ("unknown map", q("aliases", "info@example.com"), b"25:TEMP no such map: aliases,"),
    ("no key", b"7:domains,", b"20:TEMP malformed query,"),
]


@pytest.mark.parametrize(("name", "data", "reply"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden(name, data, reply):
    assert transcript(data) == reply


def test_pipelined_in_order():
    data = b"".join(g[1] for g in GOLDEN)
    assert transcript(data) == b"".join(g[2] for g in GOLDEN)


class BrokenDirectory:
    async def get_domain(self, name: str) -> Domain | None:
        raise RuntimeError("database is locked")

    async def find_mailbox(self, domain: str, local: str) -> None:
        raise RuntimeError("database is locked")


@pytest.mark.parametrize("name", ["domains", "mailboxes", "sender-transport"])
def test_store_error_is_temp(name):
    assert transcript(q(name, "info@example.com" if name != "domains" else "example.com"),
                      BrokenDirectory()) == b"18:TEMP lookup failed,"


def test_store_timeout_is_temp_within_deadline():
    import time

    class Slow(MemoryDirectory):
        async def get_domain(self, name: str) -> Domain | None:
            await asyncio.sleep(5)
            return None

    service = SocketmapService(Slow([], []), 100_000, deadline=0.2)
    t0 = time.monotonic()
    reply = asyncio.run(service.answer(b"domains example.com"))
    assert reply.encode() == b"18:TEMP lookup failed,"
    assert time.monotonic() - t0 < 1.0


def test_srs_domain_and_valid_srs_addresses_are_accepted_forged_ones_not() -> None:
    from mailpolicy.core.srs import Srs
    from mailpolicy.socketmap.maps import srs_answer
    from mailpolicy.socketmap.protocol import Query

    srs = Srs("secret", "fwd.example.test")
    good = srs.forward("someone@elsewhere.test")
    assert srs_answer(srs, Query("domains", "FWD.example.test")).status == "OK"
    assert srs_answer(srs, Query("mailboxes", good)).data == good
    assert srs_answer(srs, Query("mailboxes", "SRS0=xxxx=ZZ=elsewhere.test=someone"
                                              "@fwd.example.test")) is None
    assert srs_answer(srs, Query("domains", "example.test")) is None
    assert srs_answer(Srs("other", "fwd.example.test"), Query("mailboxes", good)) is None
