"""dot_stuffed (sending) is the inverse of DataDecoder (receiving), in any pieces."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy.esmtp.stream import DataDecoder, dot_stuffed

LINE = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
MESSAGE = st.lists(st.one_of(LINE, st.sampled_from([b".", b"..", b".x", b""])), max_size=12
                   ).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


def decode(stream: bytes) -> bytes:
    d = DataDecoder(crlf=True)
    assert d.feed(stream, True), stream
    assert not d.bare and not d.too_big
    return bytes(d.message)


@settings(max_examples=300, deadline=None)
@given(MESSAGE, st.integers(1, 9), st.integers(0, 40))
def test_stuffing_round_trips_in_any_pieces(message: bytes, chunk: int, split: int) -> None:
    parts = [message[:split], memoryview(message)[split:]]
    stream = b"".join(dot_stuffed(parts, chunk))
    assert stream.endswith(b".\r\n")
    assert decode(stream) == message


def test_examples() -> None:
    assert b"".join(dot_stuffed([b".a\r\n.\r\nb\r\n"])) == b"..a\r\n..\r\nb\r\n.\r\n"
    assert b"".join(dot_stuffed([b""])) == b".\r\n"
    assert b"".join(dot_stuffed([b"no end"])) == b"no end\r\n.\r\n"
    assert b"".join(dot_stuffed([b"a\r", b"\n.b\r\n"], 1)) == b"a\r\n..b\r\n.\r\n"
