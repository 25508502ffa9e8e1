"""DATA decoding (pure): dot-unstuffing, CRLF kept or → LF, bare CR/LF and size checks."""

from __future__ import annotations

from dataclasses import dataclass, field

TERMINATOR = b".\r\n"  # what the reader waits for; a real end is <CRLF>.<CRLF> or a first "."
KEEP_TAIL = 8  # bytes of a discarded over-long line kept to recognise the terminator


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
            self.message = bytearray()
            return
        self.message += out

    def _bare(self) -> None:
        self.bare = True
        self.message = bytearray()
