"""The one adapter around aiosmtpd: the only module that touches its private names.

The filter (smtp/) and LMTP (lmtp/) build their servers on `ESMTPServer` / `LMTPServerBase`
and use only the public methods below. Every private aiosmtpd name used here is listed in
PRIVATE_METHODS / PRIVATE_ATTRIBUTES; tests/unit/test_esmtp_adapter.py fails, naming it, when
an aiosmtpd release drops one (pyproject.toml pins the minor versions checked).

What it adds to aiosmtpd (Postfix smtpd's behaviour, see postconf(5)):
- enhanced status codes on every reply that lacks one (one table: core.replies);
- a per-request deadline (`smtpd_timeout` with `smtpd_per_request_deadline = yes`): a command
  must arrive within `limits.command_timeout_seconds` of the previous reply; during DATA the
  deadline grows by the bytes received divided by `limits.min_data_rate`, never beyond the
  timeout (`smtpd_min_data_rate`); time spent on our own work (`busy()`) does not count; past
  it the client gets `421 4.4.2 Error: timeout exceeded` and is disconnected;
- a bound on the connections of one listener (`ConnectionLimit`): beyond it a client gets
  `421 4.3.2 All server ports are busy` and is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope

from mailpolicy.config import Config
from mailpolicy.core.replies import with_enhanced_code
from mailpolicy.esmtp.data import read_data
from mailpolicy.esmtp.stream import DataDecoder, Sink

log = structlog.get_logger("mailpolicy.esmtp")

# aiosmtpd.smtp.SMTP's private names this module overrides or uses (checked against aiosmtpd
# 1.4.x). Methods: looked up on the class; attributes: set on every connected instance.
# `_handle_client` is relied on, not called: it calls `_reset_timeout()` after every valid
# command (the start of the next request's deadline) and `_timeout_cb` closes the session.
PRIVATE_METHODS = ("_create_envelope", "_getaddr", "_set_post_data_state", "_set_rset_state",
                   "_reset_timeout", "_timeout_cb", "_handle_client")
PRIVATE_ATTRIBUTES = ("_reader", "_writer", "_handler_coroutine", "_timeout_handle",
                      "_timeout_duration")

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# `<local@domain>` with an RFC 5321 Dot-string local part and a host name, then nothing or
# blanks and parameters (no comments, quotes or trailing blanks: those go to aiosmtpd's parser)
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>"
                         r"(?:[ \t]+([^\s(\"\\](?:[^(\"\\]*[^\s(\"\\])?))?\Z")

BUSY = b"421 4.3.2 All server ports are busy\r\n"
TIMED_OUT = b"421 4.4.2 Error: timeout exceeded\r\n"


_SESSION_NAMES: dict[type, list[str]] = {}


def _session_names(cls: type) -> list[str]:
    """The command and AUTH mechanism names of a session class (see ESMTPServer.__dir__)."""
    names = _SESSION_NAMES.get(cls)
    if names is None:
        names = _SESSION_NAMES[cls] = sorted(
            n for n in dir(cls) if n.startswith(("smtp_", "auth_")))
    return names


class ConnectionLimit:
    """How many connections one listener has, and how many it may have."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.count = 0

    def enter(self) -> bool:
        """Count a new connection; False (and not counted) when the listener is full."""
        if self.count >= self.maximum:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    """`command`: seconds a command (or the start of DATA) may take to arrive; `data_rate`:
    bytes/s that extend the DATA deadline (0: the whole DATA within `command`)."""

    command: float = 300.0
    data_rate: int = 500

    @classmethod
    def from_config(cls, cfg: Config) -> Timeouts:
        return cls(cfg.limits.command_timeout_seconds, cfg.limits.min_data_rate)


class ESMTPServer(SMTP):
    """aiosmtpd's SMTP session with the additions above and public names for what the
    services need from aiosmtpd's internals."""

    def __init__(self, handler: Any, *, timeouts: Timeouts = Timeouts(),
                 connection_limit: ConnectionLimit | None = None, **kwargs: Any) -> None:
        super().__init__(handler, timeout=timeouts.command, **kwargs)
        self.timeouts = timeouts
        self.connection_limit = connection_limit
        self.refused = False  # over the connection limit: answered 421, no session
        self.timed_out = False
        self._greeting_reply = False  # EHLO/HELO/LHLO replies get no enhanced codes
        self._deadline = 0.0

    def __dir__(self) -> list[str]:
        """Only the names aiosmtpd's `SMTP.__init__` looks for in `dir()` and
        `inspect.getmembers()` of every new session: its `smtp_*` commands and `auth_*`
        mechanisms. Over the full list (~140 names) that search was ~55% of a session's
        set-up, paid per message in before-queue mode (Postfix connects per transaction)."""
        return _session_names(type(self))

    # ---- aiosmtpd hooks with public names -------------------------------------------------
    def new_envelope(self) -> Envelope:
        """The envelope for a new transaction (override for a subclass of Envelope)."""
        return Envelope()

    def _create_envelope(self) -> Envelope:
        return self.new_envelope()

    def parse_path(self, arg: str) -> tuple[str | None, str | None]:
        """(address, rest) of a MAIL FROM/RCPT TO argument: aiosmtpd's parser, with the
        plain `<dot-atom@host.name> PARAMS` form (nearly every path) read by one regular
        expression first; it answers what aiosmtpd's parser answers for it (a unit test
        holds the two together), ~30 times faster."""
        m = _PLAIN_PATH.match(arg)
        if m is not None and not (self.local_part_limit
                                  and len(m[1].rpartition("@")[0]) > self.local_part_limit):
            return m[1], m[2] or ""
        try:
            return super()._getaddr(arg)
        except Exception:  # its parser (email._header_value_parser) raises on some broken
            return None, None  # paths ("<", "a@["): a malformed path (553), not a 500

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return self.parse_path(arg)

    def end_transaction(self) -> None:
        """After the reply to DATA: a new, empty envelope (as aiosmtpd does after DATA)."""
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    def reset_transaction(self) -> None:
        """As RSET: a new, empty envelope."""
        self._set_rset_state()  # type: ignore[no-untyped-call]

    @property
    def session_task(self) -> asyncio.Task[None] | None:
        """The task that runs this session (None before the connection is made)."""
        return self._handler_coroutine

    # ---- I/O ----------------------------------------------------------------------------
    async def push(self, status: str | bytes) -> None:
        line = status.encode("utf-8", "surrogateescape") if isinstance(status, str) else status
        if not self._greeting_reply:
            line = with_enhanced_code(line)
        await self.write(line + b"\r\n")

    async def write(self, data: bytes) -> None:
        """Send `data` (complete CRLF-terminated reply lines, sent as they are)."""
        self._writer.write(data)
        await self._writer.drain()

    @contextlib.contextmanager
    def greeting_reply(self) -> Iterator[None]:
        """Replies pushed inside are EHLO/HELO/LHLO lines: sent without enhanced codes."""
        self._greeting_reply = True
        try:
            yield
        finally:
            self._greeting_reply = False

    async def read_message(self, *, crlf: bool = False,
                           buffer: Sink | None = None) -> DataDecoder:
        """Read the DATA stream after `354` under the DATA deadline (see the module text), into
        `buffer` if given."""
        self._reset_timeout()
        self._deadline = time.monotonic() + self.timeouts.command
        return await read_data(self._reader, self.data_size_limit or 0, self._data_received,
                               crlf=crlf, buffer=buffer)

    def close_after_reply(self) -> None:
        """End the session once what was pushed is sent (after a 421)."""
        if self.transport is not None:
            self.transport.close()

    # ---- deadlines ----------------------------------------------------------------------
    def _data_received(self, n: int) -> None:
        """DATA bytes came: the deadline grows by n / data_rate, up to the command timeout."""
        now = time.monotonic()
        grown = self._deadline + (n / self.timeouts.data_rate if self.timeouts.data_rate else 0)
        self._deadline = min(grown, now + self.timeouts.command)
        self._reset_timeout(max(self._deadline - now, 0.001))

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Our own work (delivery, the next hop): the client's deadline stops meanwhile and
        starts afresh after it."""
        handle = self._timeout_handle
        if handle is not None:
            handle.cancel()
        try:
            yield
        finally:
            if self.transport is not None:
                self._reset_timeout()

    def _timeout_cb(self) -> None:
        """The client took too long: say so (as Postfix does) and disconnect."""
        self.timed_out = True
        assert self.session is not None
        log.info("esmtp.timeout", peer=str(self.session.peer), ident=self.__ident__)
        if self.transport is not None:
            if not self.transport.is_closing():
                cast(asyncio.Transport, self.transport).write(TIMED_OUT)
            self.transport.close()

    # ---- connection bound ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.connection_limit is not None and not self.connection_limit.enter():
            self.refused = True
            log.warning("esmtp.too_many_connections", ident=self.__ident__,
                        peer=str(transport.get_extra_info("peername")),
                        limit=self.connection_limit.maximum)
            transport.write(BUSY)  # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        if self.connection_limit is not None:
            self.connection_limit.leave()
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        return super().eof_received()


class LMTPServerBase(ESMTPServer, LMTP):
    """The same for LMTP (RFC 2033): LHLO instead of HELO/EHLO."""

    async def write_lhlo(self, lines: list[str]) -> None:
        """The LHLO reply: `lines` as one multi-line 250 reply, without enhanced codes."""
        text = "".join(f"250{' ' if i == len(lines) - 1 else '-'}{x}\r\n"
                       for i, x in enumerate(lines))
        await self.write(text.encode())
