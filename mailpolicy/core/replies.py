"""SMTP/LMTP replies as values; the one place where errors become replies."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: code, enhanced status code and text."""

    code: int
    dsn: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.dsn} {self.text}"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


class ReplyError(Exception):
    """An exception that carries the Reply to give."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


OK = Reply(250, "2.0.0", "Ok")
DELIVERED = Reply(250, "2.0.0", "Delivered")
UNKNOWN_USER = Reply(550, "5.1.1", "Mailbox does not exist")
# accepted at RCPT, gone by delivery (the directory changed): Postfix keeps it and retries
NO_DESTINATION_NOW = Reply(450, "4.1.1", "No such mailbox now, try again later")
DISABLED = Reply(550, "5.2.1", "Mailbox disabled, not accepting messages")
MAILBOX_FULL = Reply(552, "5.2.2", "Mailbox is full")
MAILBOX_FULL_TEMP = Reply(452, "4.2.2", "Mailbox is full")
NO_SPACE = Reply(452, "4.3.1", "Insufficient system storage")
TEMP_FAILURE = Reply(451, "4.3.0", "Temporary internal failure, try again later")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
BARE_LF = Reply(550, "5.5.2", "Bare <LF> or <CR> received, use <CRLF> line endings")
LOOP = Reply(451, "4.4.6", "Mail loop detected, message deferred")


def from_exception(exc: BaseException) -> Reply:
    """Map any exception to a reply: never 5xx unless the exception says so."""
    if isinstance(exc, ReplyError):
        return exc.reply
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return NO_SPACE
        if exc.errno in (errno.EDQUOT, errno.EFBIG):
            return MAILBOX_FULL
    return TEMP_FAILURE


# The enhanced status code (RFC 3463) a reply without one gets, by reply code: the one table
# for every SMTP/LMTP server here (RFC 2034: every 2xx/4xx/5xx reply but the greeting and the
# EHLO/LHLO lines, which the servers leave alone). Other codes get "<class>.0.0".
ENHANCED_DEFAULTS: dict[int, str] = {
    221: "2.0.0", 250: "2.0.0", 251: "2.1.5", 252: "2.5.0",
    421: "4.3.0", 451: "4.3.0", 452: "4.3.1",
    500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4", 530: "5.7.0",
    550: "5.0.0", 552: "5.3.4", 553: "5.1.3", 554: "5.0.0", 555: "5.5.4",
}
_HAS_ENHANCED = re.compile(rb"[245]\.\d{1,3}\.\d{1,3}(?:[ \t]|$)")


def with_enhanced_code(line: bytes) -> bytes:
    """`line` (one reply line, no CRLF) with an enhanced status code after its reply code when
    it is a 2xx/4xx/5xx line without one (greeting lines, 220, and 3xx are left alone)."""
    if (len(line) < 4 or line[3:4] not in (b" ", b"-") or line[:1] not in b"245"
            or not line[:3].isdigit() or line[:3] == b"220" or _HAS_ENHANCED.match(line, 4)):
        return line
    code = int(line[:3])
    dsn = ENHANCED_DEFAULTS.get(code, f"{code // 100}.0.0")
    return line[:4] + dsn.encode() + b" " + line[4:]
