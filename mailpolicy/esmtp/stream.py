"""DATA decoding (pure): dot-unstuffing, CRLF kept or → LF, bare CR/LF and size checks; and
the reverse, dot-stuffing a message for sending in pieces."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

TERMINATOR = b".\r\n"  # what the reader waits for; a real end is <CRLF>.<CRLF> or a first "."
KEEP_TAIL = 8  # bytes of a discarded over-long line kept to recognise the terminator


class Sink(Protocol):
    """Where DataDecoder may write the message instead of its own bytearray."""

    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


@dataclass(slots=True)
class DataDecoder:
    """Feed the raw DATA stream in pieces with `feed(chunk, maybe_end)`; it returns True once
    the terminating `.` line has been seen. The message is kept unstuffed in `message` (one
    buffer, about the message's size): LF-normalised (for Maildir), or with its CRLF line ends
    byte for byte when `crlf` (for relaying). `size` counts it as RFC 1870 does (CRLF line
    ends, without stuffing). After a bare CR/LF or past `limit`, only the end is looked for
    and nothing more is kept."""

    limit: int = 0  # 0 = no limit
    crlf: bool = False  # keep CRLF line ends (else CRLF → LF)
    message: bytearray = field(default_factory=bytearray)
    buffer: Sink | None = None  # set: the message is written here instead (see take())
    size: int = 0
    bare: bool = False
    too_big: bool = False
    _pending: bytearray = field(default_factory=bytearray)
    _line_start: bool = True  # _pending starts at the beginning of a line

    @property
    def discarding(self) -> bool:
        return self.bare or self.too_big

    def feed(self, chunk: bytes | bytearray, maybe_end: bool) -> bool:
        """Add raw bytes. `maybe_end`: the chunk ends with `.<CRLF>` (the reader stopped there)."""
        old = len(self._pending)
        if old:
            self._pending += chunk
            pending: bytes | bytearray = self._pending
        else:
            pending = chunk  # nothing held back: no copy into _pending
        if maybe_end and (pending.endswith(b"\r\n.\r\n")
                          or (self._line_start and pending == TERMINATOR)):
            self._segment(pending[: len(pending) - 3])
            self._pending = bytearray()
            return True
        # earlier bytes of _pending hold no CRLF (we always cut after the last one)
        cut = len(pending) if maybe_end else pending.rfind(b"\r\n", max(0, old - 1)) + 2
        if cut >= 2:
            self._segment(pending[:cut] if cut < len(pending) else pending)
            self._pending = bytearray(pending[cut:])
            self._line_start = True
        elif self.limit and len(pending) + self.size > self.limit:
            self.too_big = True  # one endless line: keep only its tail
            self._pending = bytearray(pending[-KEEP_TAIL:])
            self._line_start = False
        elif not old:
            self._pending = bytearray(pending)
        return False

    def _segment(self, seg: bytes | bytearray) -> None:
        """Complete lines starting at a line start (when _line_start) and ending with CRLF."""
        if not seg or self.discarding:
            return
        if self._line_start and seg[:1] == b".":
            seg = seg[1:]
        if self.crlf:
            # three counting passes, no copy: every CR and every LF must belong to a CRLF
            pairs = seg.count(b"\r\n")
            if seg.count(b"\n") != pairs or seg.count(b"\r") != pairs:
                self._bare()
                return
            if b"\n." in seg:
                seg = seg.replace(b"\n.", b"\n")  # each LF ends a CRLF here
            out = seg
            self.size += len(out)
        else:
            # one pass to LF, then: a CR left over is a bare CR; more LFs than CRLFs replaced
            # is a bare LF (fewer passes than counting CR, LF and CRLF separately)
            out = seg.replace(b"\r\n", b"\n")
            pairs = len(seg) - len(out)
            if b"\r" in out or out.count(b"\n") != pairs:
                self._bare()
                return
            if b"\n." in out:
                out = out.replace(b"\n.", b"\n")
            self.size += len(out) + pairs
        if self.limit and self.size > self.limit:
            self.too_big = True
            self._drop()
            return
        if self.buffer is not None:
            self.buffer.write(out)
        else:
            self.message += out

    def take(self) -> bytes:
        """The message as bytes, once: with a BytesIO `buffer` without copying it (it hands
        its own buffer over), so the message is in memory once, not twice."""
        if isinstance(self.buffer, io.BytesIO):
            data, self.buffer = self.buffer.getvalue(), io.BytesIO()
            return data
        return bytes(self.message)

    def _drop(self) -> None:
        self.message = bytearray()
        self.buffer = None  # nothing more is written (the caller still holds its buffer)

    def _bare(self) -> None:
        self.bare = True
        self._drop()


SEND_CHUNK = 256 * 1024  # bytes of message per piece of the outgoing DATA stream


def dot_stuffed(parts: Iterable[bytes | bytearray | memoryview],
                chunk: int = SEND_CHUNK) -> Iterator[bytes]:
    """The DATA stream (RFC 5321 4.5.2) of a message with CRLF line ends given in `parts`
    (concatenated as they are): every line that starts with "." gets another, a final CRLF is
    added when missing, then the terminating ".<CRLF>". Pieces of about `chunk` bytes are
    copied one at a time, so sending needs no copy of the whole message."""
    at_line_start = True
    carry = b""  # a CR held back so that a CRLF is never split between two pieces
    sent_any = False
    for part in parts:
        view = memoryview(part)
        pos, n = 0, len(view)
        while pos < n:
            piece = carry + bytes(view[pos:pos + chunk])
            pos += len(piece) - len(carry)
            carry = b""
            if piece.endswith(b"\r"):
                carry, piece = b"\r", piece[:-1]
            if not piece:
                continue
            out = piece.replace(b"\r\n.", b"\r\n..")
            if at_line_start and out[:1] == b".":
                out = b"." + out
            at_line_start = piece.endswith(b"\r\n")
            sent_any = True
            yield out
    if carry:  # the message ended with a lone CR: end the line
        yield b"\r\n"
    elif sent_any and not at_line_start:
        yield b"\r\n"
    yield b".\r\n"
