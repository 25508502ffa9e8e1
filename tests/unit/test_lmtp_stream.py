"""DATA decoding: dot-unstuffing, CRLF → LF or kept, terminator, bare CR/LF, size limit."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy.esmtp.stream import TERMINATOR, DataDecoder


def reference(body_lines: list[bytes]) -> bytes:
    """The message the client meant: lines joined with LF."""
    return b"".join(line + b"\n" for line in body_lines)


def wire(body_lines: list[bytes]) -> bytes:
    """What an SMTP client sends: dot-stuffed CRLF lines and the terminator."""
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                    for ln in body_lines) + b".\r\n"


def reader_chunks(raw: bytes, cuts: list[int]) -> list[tuple[bytes, bool]]:
    """Split `raw` the way the server's reader does: every `.<CRLF>` ends a chunk flagged
    maybe_end; other cuts never split a `.<CRLF>`."""
    ends = {m.end() for m in re.finditer(re.escape(TERMINATOR), raw)}
    inside = {m.start() + i for m in re.finditer(re.escape(TERMINATOR), raw) for i in (1, 2)}
    points = sorted({c for c in cuts if 0 < c < len(raw) and c not in inside} | ends)
    out, prev = [], 0
    for p in points:
        if p > prev:
            out.append((raw[prev:p], p in ends))
            prev = p
    if prev < len(raw):
        out.append((raw[prev:], False))
    return out


def decode(raw: bytes, cuts: list[int] | None = None, limit: int = 0,
           crlf: bool = False) -> tuple[DataDecoder, int]:
    """Feed until the decoder reports the end; returns it and how many bytes it consumed."""
    dec = DataDecoder(limit=limit, crlf=crlf)
    used = 0
    for chunk, maybe_end in reader_chunks(raw, cuts or []):
        used += len(chunk)
        if dec.feed(chunk, maybe_end):
            return dec, used
    raise AssertionError("terminator not found")


def test_simple_message_is_lf_normalised():
    dec, _ = decode(b"Subject: x\r\n\r\nhello\r\n.\r\n")
    assert bytes(dec.message) == b"Subject: x\n\nhello\n"
    assert dec.size == len(b"Subject: x\r\n\r\nhello\r\n")
    assert not dec.bare and not dec.too_big


def test_empty_message_is_just_the_dot():
    dec, used = decode(b".\r\n")
    assert bytes(dec.message) == b"" and used == 3


def test_dot_stuffing_removed_once_per_line():
    lines = [b".", b"..", b".x", b"a.", b"", b"...end"]
    dec, _ = decode(wire(lines))
    assert bytes(dec.message) == reference(lines)


def test_line_ending_with_dot_is_not_the_end():
    lines = [b"one.", b"two", b"."]
    dec, _ = decode(wire(lines))
    assert bytes(dec.message) == reference(lines)


def test_does_not_read_past_terminator():
    raw = wire([b"a", b"b"])
    dec, used = decode(raw + b"RSET\r\nQUIT\r\n")
    assert used == len(raw) and bytes(dec.message) == b"a\nb\n"


def test_bare_lf_is_flagged():
    dec, _ = decode(b"a\nb\r\n.\r\n")
    assert dec.bare and not dec.message


def test_bare_cr_is_flagged():
    dec, _ = decode(b"a\rb\r\n.\r\n")
    assert dec.bare


def test_bare_lf_dot_lf_does_not_end_data():
    # SMTP smuggling: only <CRLF>.<CRLF> ends the data
    raw = b"a\n.\nMAIL FROM:<evil@x>\r\nb\r\n.\r\n"
    dec, used = decode(raw)
    assert used == len(raw) and dec.bare


def test_size_limit_exact_and_one_over():
    body = b"x" * 98 + b"\r\n"  # 100 bytes on the wire
    dec, _ = decode(body + b".\r\n", limit=100)
    assert not dec.too_big and dec.size == 100
    dec, _ = decode(b"y" + body + b".\r\n", limit=100)
    assert dec.too_big and not dec.message


def test_endless_line_over_limit_is_refused_and_end_still_found():
    raw = b"z" * 5000 + b"\r\n.\r\n"
    dec, used = decode(raw, cuts=list(range(0, 5000, 100)), limit=1000)
    assert dec.too_big and used == len(raw)


def test_byte_at_a_time_equals_whole():
    lines = [b"From: a@b", b"", b".hidden", b"tail."]
    raw = wire(lines)
    dec, _ = decode(raw, cuts=list(range(len(raw))))
    assert bytes(dec.message) == reference(lines)


line = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line, max_size=30), cuts=st.lists(st.integers(0, 2000), max_size=40))
def test_any_chunking_gives_the_same_message(lines, cuts):
    raw = wire(lines)
    dec, used = decode(raw + b"NOOP\r\n", cuts)
    assert used == len(raw)
    assert bytes(dec.message) == reference(lines)
    assert dec.size == sum(len(ln) + 2 for ln in lines)
    assert not dec.bare


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=20))
def test_random_bytes_never_crash(data, cuts):
    raw = data + b"\r\n.\r\n"
    dec, used = decode(raw, cuts, limit=200)
    assert used <= len(raw)
    assert dec.bare or dec.too_big or b"\r" not in dec.message


# ---------------------------------------------------------------- crlf=True (the filter)
def crlf_reference(body_lines: list[bytes]) -> bytes:
    """The message the client meant, byte for byte: lines joined with CRLF."""
    return b"".join(line + b"\r\n" for line in body_lines)


def test_crlf_mode_keeps_crlf_and_unstuffs():
    lines = [b"Subject: x", b"", b".", b"..", b".x", b"a.", b"\x00\xff", b"...end", b"tail."]
    dec, used = decode(wire(lines) + b"QUIT\r\n", crlf=True)
    assert bytes(dec.message) == crlf_reference(lines) and used == len(wire(lines))
    assert dec.size == len(crlf_reference(lines)) and not dec.bare


def test_crlf_mode_byte_at_a_time_equals_whole():
    lines = [b"From: a@b", b"", b".hidden", b"", b".", b"tail."]
    raw = wire(lines)
    dec, _ = decode(raw, cuts=list(range(len(raw))), crlf=True)
    assert bytes(dec.message) == crlf_reference(lines)


def test_crlf_mode_empty_message_and_empty_lines():
    assert bytes(decode(b".\r\n", crlf=True)[0].message) == b""
    assert bytes(decode(b"\r\n\r\n.\r\n", crlf=True)[0].message) == b"\r\n\r\n"


def test_crlf_mode_bare_lf_and_cr_flagged_anywhere():
    for raw in (b"a\nb\r\n.\r\n", b"a\rb\r\n.\r\n", b"a\r\r\n.\r\n", b"a\r\n\n.\r\nb\r\n.\r\n",
                b"ok\r\n" * 100 + b"x\n\r\n.\r\n"):
        for cuts in ([], list(range(len(raw)))):
            dec, used = decode(raw, cuts, crlf=True)
            assert dec.bare and not dec.message and used == len(raw), raw


def test_crlf_mode_size_limit_exact_and_one_over():
    body = b"x" * 98 + b"\r\n"
    dec, _ = decode(b"." + body + b".\r\n", limit=100, crlf=True)  # stuffing is not counted
    assert not dec.too_big and dec.size == 100 and bytes(dec.message) == body
    dec, _ = decode(b"y" + body + b".\r\n", limit=100, crlf=True)
    assert dec.too_big and not dec.message


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line, max_size=30), cuts=st.lists(st.integers(0, 2000), max_size=40))
def test_crlf_mode_any_chunking_gives_the_original(lines, cuts):
    raw = wire(lines)
    dec, used = decode(raw + b"NOOP\r\n", cuts, crlf=True)
    assert used == len(raw)
    assert bytes(dec.message) == crlf_reference(lines)
    assert dec.size == len(dec.message) and not dec.bare and not dec.too_big


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=20))
def test_crlf_mode_agrees_with_lf_mode(data, cuts):
    raw = data + b"\r\n.\r\n"
    lf, used_lf = decode(raw, cuts, limit=200)
    crlf, used = decode(raw, cuts, limit=200, crlf=True)
    assert used == used_lf
    assert (crlf.bare, crlf.too_big, crlf.size) == (lf.bare, lf.too_big, lf.size)
    assert bytes(crlf.message).replace(b"\r\n", b"\n") == bytes(lf.message)
