"""Postfix SMTPD policy delegation wire format: pure bytes → requests and actions → bytes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_MAX_REQUEST = 64 * 1024  # bytes of one request (all its lines)
REQUEST_TYPE = "smtpd_access_policy"


class ProtocolError(ValueError):
    """The peer sent something that is not a policy request: log it and disconnect, no reply."""


# The attributes the service reads (the others are ignored); FIELDS order is fields()' order.
FIELDS = ("request", "protocol_state", "recipient", "sender", "size", "queue_id", "instance",
          "client_name", "client_address", "sasl_username", "recipient_count")


@dataclass(slots=True)
class Request:
    """One policy request: the attributes the service reads (duplicates: the last wins)."""

    protocol_state: str  # upper-cased
    recipient: str
    sender: str
    queue_id: str
    instance: str
    client: str  # "name[address]" as Postfix logs it, "" when neither is known
    size_text: str  # MAIL FROM SIZE= as sent; at END-OF-MESSAGE the message's real size
    sasl_username: str = ""  # the SMTP AUTH login (submission), "" without AUTH
    recipient_count_text: str = ""  # accepted recipients so far (DATA, END-OF-MESSAGE)
    # END-OF-MESSAGE: the recipients this connection accepted in the transaction (Postfix
    # sends `recipient` there only when there is exactly one); set by the server
    recipients: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Sequence[str]) -> Request:
        """From the values of FIELDS, in that order."""
        (_request, state, recipient, sender, size, queue_id, instance, name, addr, login,
         count) = values
        return cls(state.upper(), recipient, sender, queue_id, instance,
                   f"{name}[{addr}]" if name or addr else "", size, login, count)

    @property
    def recipient_count(self) -> int:
        """recipient_count (0 when absent or not a number)."""
        value = self.recipient_count_text
        return int(value) if value.isascii() and value.isdigit() else 0

    @property
    def size(self) -> int:
        """MAIL FROM SIZE= (0 when absent or not a number)."""
        value = self.size_text
        return int(value) if value.isascii() and value.isdigit() else 0


class Parser:
    """Incremental parser: feed it bytes in any chunking, get complete requests back.

    A malformed request sets `error` (a ProtocolError); the requests completed before it are
    still returned, nothing after it ever is, and the connection must then be closed without
    a reply to the bad request."""

    def __init__(self, max_request: int = DEFAULT_MAX_REQUEST) -> None:
        self.max_request = max_request
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the pending request
        self.error: ProtocolError | None = None

    @property
    def idle(self) -> bool:
        """True when no partial request is pending (a close here loses nothing)."""
        return not self._buf

    def feed(self, data: bytes) -> list[Request]:
        out: list[Request] = []
        if self.error is not None:
            return out
        if not self._buf and data.endswith(b"\n\n") and len(data) <= self.max_request:
            request = _plain_request(data[:-2])
            if request is not None:  # the usual case: exactly one whole request
                out.append(request)
                return out
        try:
            self._feed(data, out)
        except ProtocolError as e:
            self.error = e
            self._buf.clear()
        return out

    def _feed(self, data: bytes, out: list[Request]) -> None:
        buf = self._buf
        buf += data
        start = 0
        while start < len(buf):
            if buf[start] == 0x0A or buf.startswith(b"\r\n", start):
                raise ProtocolError("empty request")
            m = _END.search(buf, max(start, self._scan))
            if m is None:
                break
            if m.end() - start > self.max_request:
                raise ProtocolError(f"request longer than {self.max_request} bytes")
            out.append(_request(bytes(buf[start:m.start()])))
            start = self._scan = m.end()
        del buf[:start]
        self._scan = max(0, len(buf) - 2)  # an end marker may begin in the last two bytes
        if len(buf) > self.max_request:
            raise ProtocolError(f"request longer than {self.max_request} bytes")


_END = re.compile(rb"\n\r?\n")  # the empty line that ends a request (CR tolerated)


def fields_py(block: bytes) -> list[str] | None:
    """The values of FIELDS ("" when absent, the last one when repeated) of a block that is
    exactly one well-formed request without CR or NUL (its final empty line cut off); None for
    anything else (several requests, errors: then the careful path sorts it out). An empty
    line (where a request ends) has no "=", and a line with an empty name is the only way to
    get the name ""."""
    text = block.decode("utf-8", "surrogateescape")
    if "\0" in text or "\r" in text:
        return None
    try:  # one C-level pass; a line without "=" makes a 1-item list
        attrs = dict([line.split("=", 1) for line in text.split("\n")])
    except ValueError:
        return None
    if "" in attrs:
        return None
    return [attrs.get(name, "") for name in FIELDS]


try:  # the same function compiled (Cython): ~1 µs instead of ~5 per request
    from mailpolicy.policy._fields import fields
except ImportError:  # installed without a C compiler: the Python one
    fields = fields_py


def _plain_request(block: bytes) -> Request | None:
    """The request in `block` when it is the usual well-formed one, else None."""
    values = fields(block)
    if values is None or values[0] != REQUEST_TYPE:
        return None
    return Request.of(values)


def _request(block: bytes) -> Request:
    """The attribute lines of one request (without the final newline) -> Request."""
    text = block.decode("utf-8", "surrogateescape")
    if "\0" in text:
        raise ProtocolError("NUL in request")
    lines = text.split("\n")
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        if any("\r" in line for line in lines):
            raise ProtocolError("CR inside an attribute line")
    attrs: dict[str, str]
    try:  # the common case in one C-level pass; a line without "=" makes a 1-item list
        attrs = dict([line.split("=", 1) for line in lines])
        ok = not text.startswith("=") and "\n=" not in text
    except ValueError:
        ok = False
    if not ok:
        for line in lines:  # find the offending line for the error message
            name, eq, _value = line.partition("=")
            if not eq or not name:
                raise ProtocolError(f"malformed attribute line: {line[:80]!r}")
    if attrs.get("request") != REQUEST_TYPE:
        raise ProtocolError(
            f"not an {REQUEST_TYPE} request (request={attrs.get('request', '')[:80]!r})")
    return Request.of([attrs.get(name, "") for name in FIELDS])


_ENCODED: dict[str, bytes] = {}  # encode_action() of the few actions there are
MAX_ENCODED = 256


def encode_action(action: str) -> bytes:
    """`action=<action>` and the empty line; newlines in the action are flattened to spaces."""
    reply = _ENCODED.get(action)
    if reply is None:
        clean = (action.replace("\r", " ").replace("\n", " ").replace("\0", " ").strip()
                 or "DUNNO")
        reply = b"action=" + clean.encode("utf-8", "surrogateescape") + b"\n\n"
        if len(_ENCODED) < MAX_ENCODED:
            _ENCODED[action] = reply
    return reply


def encode_request(attrs: Mapping[str, str]) -> bytes:
    """A request as Postfix sends it (for tests and the benchmark client)."""
    lines = [f"{k}={v}\n" for k, v in attrs.items()]
    return ("".join(lines) + "\n").encode("utf-8", "surrogateescape")
