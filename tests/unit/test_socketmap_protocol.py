"""Socketmap netstrings: incremental parsing in any chunking, limits, framing errors, replies."""

from __future__ import annotations

from chunking import assert_chunking_is_irrelevant
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy.socketmap.protocol import (
    NOTFOUND,
    Parser,
    ProtocolError,
    Query,
    Reply,
    encode_query,
    netstring,
    ok,
    parse_query,
    perm,
    temp,
)

Q1 = b"30:mailboxes info+tag@example.com,"
Q2 = b"19:domains example.com,"


def test_netstring():
    assert netstring(b"") == b"0:,"
    assert netstring(b"hello world!") == b"12:hello world!,"


def test_whole_and_pipelined():
    parser = Parser()
    assert parser.feed(Q1 + Q2) == [b"mailboxes info+tag@example.com", b"domains example.com"]
    assert parser.error is None and parser.idle


def test_one_byte_at_a_time():
    parser = Parser()
    out: list[bytes] = []
    data = Q1 + Q2 + Q1
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1])
    assert out == Parser().feed(data) and len(out) == 3 and parser.error is None


def test_large_request_is_not_mishandled():
    # Mailu's podop failed on requests over 1 KiB; ours must take any size up to the limit
    key = "a" * 5000 + "@example.com"
    data = encode_query("mailboxes", key)
    parser = Parser()
    out = []
    for i in range(0, len(data), 700):
        out += parser.feed(data[i:i + 700])
    assert [parse_query(p) for p in out] == [Query("mailboxes", key)]


def test_too_long_is_an_error_before_reading_it():
    parser = Parser(max_request=100)
    assert parser.feed(b"101:") == [] and parser.error is not None
    parser = Parser(max_request=100)
    assert parser.feed(b"100:") == [] and parser.error is None


def test_too_many_digits_is_an_error():
    parser = Parser(max_request=100)
    assert parser.feed(b"0000") == [] and parser.error is not None


def test_bad_length_and_terminator():
    for bad in (b"x:abc,", b":abc,", b"3:abcd", b"-1:a,", b" 3:abc,"):
        parser = Parser()
        assert parser.feed(bad) == [], bad
        assert parser.error is not None, bad


def test_payloads_before_an_error_are_kept():
    parser = Parser()
    assert parser.feed(Q2 + b"3:abc;" + Q2) == [b"domains example.com"]
    assert parser.error is not None
    assert parser.feed(Q2) == []


def test_parse_query():
    assert parse_query(b"mailboxes a b@example.com") == Query("mailboxes", "a b@example.com")
    assert parse_query(b"domains ") == Query("domains", "")
    for bad in (b"domains", b" example.com", b""):
        try:
            parse_query(bad)
        except ProtocolError:
            continue
        raise AssertionError(bad)


def test_replies():
    assert ok("x@example.com").encode() == b"16:OK x@example.com,"
    assert NOTFOUND.encode() == b"9:NOTFOUND ,"
    assert temp("db\nlocked").encode() == b"14:TEMP db locked,"
    assert perm("bad").encode() == b"8:PERM bad,"
    assert Reply("OK", "x" * 200_000).encode() == b"20:TEMP reply too large,"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([Q1, Q2, b"0:,", b"3:", b"abc", b",", b"9", b":"]), max_size=10),
       st.lists(st.integers(min_value=0, max_value=40), max_size=20))
def test_any_chunking_gives_the_same_result(pieces, sizes):
    assert_chunking_is_irrelevant(lambda: Parser(max_request=1000), b"".join(pieces), sizes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_random_bytes_never_raise(data):
    for payload in Parser(max_request=100).feed(data):
        assert len(payload) <= 100
