"""The adapter's regular expression for plain `<local@domain> PARAMS` paths answers exactly
what aiosmtpd's own path parser answers, on every input it takes (it is only a fast path)."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy.esmtp.adapter import _PLAIN_PATH, ESMTPServer


@pytest.fixture(scope="module")
def server() -> ESMTPServer:
    loop = asyncio.new_event_loop()
    try:
        return ESMTPServer(object(), loop=loop)
    finally:
        loop.close()


def reference(server: ESMTPServer, arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's answer; where its parser raises ("<", "a@["), a malformed path."""
    try:
        return SMTP._getaddr(server, arg)
    except Exception:
        return None, None


def both(server: ESMTPServer, arg: str) -> tuple[object, object]:
    return server.parse_path(arg), reference(server, arg)


@pytest.mark.parametrize("arg", [
    "<a@b>", "<Alice.Smith+tag@Example-Mail.COM>", "<a@b> SIZE=100 BODY=8BITMIME",
    "<a@b>\tSIZE=1", "<a@b>   SIZE=1  X=2", "<a!#$%&'*+/=?^_`{|}~@b.c>", "<x@a1.b-2.c3>",
])
def test_plain_paths_take_the_fast_way_and_agree(server: ESMTPServer, arg: str) -> None:
    assert _PLAIN_PATH.match(arg) is not None
    fast, slow = both(server, arg)
    assert fast == slow and fast[0] is not None


@pytest.mark.parametrize("arg", [
    "<>", "<> SIZE=5", " <a@b>", "<a@b", "a@b", "<a..b@c>", "<.a@b>", "<a@b.>", '<"x y"@b>',
    "<@r:a@b>", "<a@[1.2.3.4]>", "<a b@c>", "<ü@b>", "<a@b> (comment)", "<postmaster>",
    "<a@-b.c>", "<a@b_c.d>", "<a@b> SIZE=1 ", "<a@b>SIZE=1", '<a@b> X="y"', "<", "<<", "a@[",
])
def test_everything_else_goes_to_aiosmtpd(server: ESMTPServer, arg: str) -> None:
    assert _PLAIN_PATH.match(arg) is None
    fast, slow = both(server, arg)
    assert fast == slow


PIECES = st.sampled_from(["a", "B", "0", ".", "@", "<", ">", " ", "\t", "-", "_", "+", '"',
                          "(", ")", "\\", "=", "[", "]", ":", "ü", "SIZE=1", "ex.com", "\r"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
def test_random_paths_agree(server: ESMTPServer, arg: str) -> None:
    fast, slow = both(server, arg)
    assert fast == slow, arg
