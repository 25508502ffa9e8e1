"""Sendmail/Postfix socketmap wire format: pure, length-checked netstrings in and out."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_REQUEST = 100 * 1024  # bytes of one netstring payload
MAX_REPLY = 100_000  # Postfix's socketmap_max_reply_size


class ProtocolError(ValueError):
    """Broken framing: answer TEMP once if possible and close the connection."""


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # the map name
    key: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: str  # OK, NOTFOUND, TEMP, TIMEOUT, PERM
    data: str = ""

    def encode(self) -> bytes:
        payload = f"{self.status} {self.data}".encode("utf-8", "surrogateescape")
        if len(payload) > MAX_REPLY:
            payload = b"TEMP reply too large"
        return netstring(payload)


def ok(data: str) -> Reply:
    return Reply("OK", data)


NOTFOUND = Reply("NOTFOUND", "")


def temp(reason: str) -> Reply:
    return Reply("TEMP", _clean(reason))


def perm(reason: str) -> Reply:
    return Reply("PERM", _clean(reason))


def _clean(text: str) -> str:
    return " ".join(text.split())[:512]


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class Parser:
    """Incremental netstring parser: feed bytes in any chunking, get whole payloads back.
    A framing error sets `error` (payloads completed before it are still returned)."""

    def __init__(self, max_request: int = DEFAULT_MAX_REQUEST) -> None:
        self.max_request = max_request
        self._max_digits = len(str(max_request))
        self._buf = bytearray()
        self.error: ProtocolError | None = None

    @property
    def idle(self) -> bool:
        return not self._buf

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.error is not None:
            return out
        self._buf += data
        try:
            self._parse(out)
        except ProtocolError as e:
            self.error = e
            self._buf.clear()
        return out

    def _parse(self, out: list[bytes]) -> None:
        buf = self._buf
        pos = 0
        while pos < len(buf):
            colon = buf.find(b":", pos, pos + self._max_digits + 1)
            if colon < 0:
                pending = buf[pos:]
                if len(pending) > self._max_digits or not pending.isdigit():
                    raise ProtocolError(f"bad netstring length: {bytes(pending[:20])!r}")
                break
            digits = buf[pos:colon]
            if not digits or not digits.isdigit():
                raise ProtocolError(f"bad netstring length: {bytes(digits[:20])!r}")
            length = int(digits)
            if length > self.max_request:
                raise ProtocolError(f"request of {length} bytes exceeds {self.max_request}")
            end = colon + 1 + length
            if len(buf) <= end:
                break  # payload and its ',' not all here yet
            if buf[end] != 0x2C:  # ','
                raise ProtocolError("netstring not terminated by ','")
            out.append(bytes(buf[colon + 1:end]))
            pos = end + 1
        del buf[:pos]


def parse_query(payload: bytes) -> Query:
    """`NAME key` (one space); raises ProtocolError when there is no name or no space."""
    name, space, key = payload.partition(b" ")
    if not space or not name:
        raise ProtocolError(f"query without 'name key': {payload[:80]!r}")
    return Query(name.decode("ascii", "replace"), key.decode("utf-8", "surrogateescape"))


def encode_query(name: str, key: str) -> bytes:
    """A query as Postfix sends it (for tests)."""
    return netstring(f"{name} {key}".encode("utf-8", "surrogateescape"))
