"""DATA decoding (pure): dot-unstuffing, CRLF → LF, bare CR/LF and size checks, in chunks."""

from __future__ import annotations

from dataclasses import dataclass, field

TERMINATOR = b".\r\n"  # what the reader waits for; a real end is <CRLF>.<CRLF> or a first "."
KEEP_TAIL = 8  # bytes of a discarded over-long line kept to recognise the terminator


@dataclass(slots=True)
class DataDecoder:
    """Feed the raw DATA stream in pieces with `feed(chunk, maybe_end)`; it returns True once
    the terminating `.` line has been seen. The message is kept LF-normalised and unstuffed in
    `message` (one buffer, about the message's size); `size` counts it as RFC 1870 does
    (CRLF line ends, without stuffing). After a bare CR/LF or past `limit`, only the end is
    looked for and nothing more is kept."""

    limit: int = 0  # 0 = no limit
    message: bytearray = field(default_factory=bytearray)
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
        pending = self._pending
        old = len(pending)
        pending += chunk
        if maybe_end and (pending.endswith(b"\r\n.\r\n")
                          or (self._line_start and pending == TERMINATOR)):
            self._segment(pending[: len(pending) - 3])
            self._pending = bytearray()
            return True
        # earlier bytes of _pending hold no CRLF (we always cut after the last one)
        cut = len(pending) if maybe_end else pending.rfind(b"\r\n", max(0, old - 1)) + 2
        if cut >= 2:
            self._segment(pending[:cut] if cut < len(pending) else pending)
            self._pending = pending[cut:] if cut < len(pending) else bytearray()
            self._line_start = True
        elif self.limit and len(pending) + self.size > self.limit:
            self.too_big = True  # one endless line: keep only its tail
            self._pending = pending[-KEEP_TAIL:]
            self._line_start = False
        return False

    def _segment(self, seg: bytes | bytearray) -> None:
        """Complete lines starting at a line start (when _line_start) and ending with CRLF."""
        if not seg or self.discarding:
            return
        if self._line_start and seg[:1] == b".":
            seg = seg[1:]
        # one pass to LF, then: a CR left over is a bare CR; more LFs than CRLFs replaced is
        # a bare LF (fewer passes over the data than counting CR, LF and CRLF separately)
        lf = seg.replace(b"\r\n", b"\n")
        pairs = len(seg) - len(lf)
        if b"\r" in lf or lf.count(b"\n") != pairs:
            self.bare = True
            self.message = bytearray()
            return
        if b"\n." in lf:
            lf = lf.replace(b"\n.", b"\n")
        self.size += len(lf) + pairs
        if self.limit and self.size > self.limit:
            self.too_big = True
            self.message = bytearray()
            return
        self.message += lf
