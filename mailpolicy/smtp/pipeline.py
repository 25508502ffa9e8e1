"""The filter as a pipeline of named steps over one Transaction (the extension point of the filter).

How a step works
----------------
A step is any object with a ``name`` and an ``async __call__(tx) -> Reply | None``:

    class MyStep:
        name = "my-step"
        async def __call__(self, tx: Transaction) -> Reply | None:
            if something_wrong(tx):
                return Reply(451, "4.7.0", "try later")   # ends processing: this is the answer
            tx.add_header("X-Thing", "value")            # prepend a header
            tx.strip_headers.add("x-thing")              # drop incoming X-Thing fields
            return None                                  # continue with the next step

Steps run in order; the first that returns a Reply decides the answer to the client (a 2xx
Reply from a step means "accepted, nothing to deliver"). The last step, ``reinject``, sends the
message on and returns the next hop's verdict. An exception in any step becomes 451 4.3.0 (the
message stays queued at the client); never return 5xx in after-queue mode unless the failure is
permanent and bouncing is acceptable (our own Postfix would bounce to a possibly forged sender).

The order (``mailpolicy.smtp.server.Filter.pipeline`` builds it for each session):
``hops`` (loop guard) → ``srs-reverse`` (bounces to our SRS addresses go back to the original
sender) → ``dmarc`` (its checks need the recipients as sent) → ``rewrite`` (aliases, copies,
default actions) → ``srs`` (envelope sender for external copies) → ``route`` (external copies
through the routed listener of their domain's outbound IP) → signing → ``reinject``.

What a step may change on the Transaction: ``rcpt_tos`` (the envelope recipients sent on),
``senders`` (per-recipient envelope sender, e.g. SRS), ``prepend`` / ``add_header`` (new header
fields, prepended in order), ``strip_headers`` and ``strip_if`` (incoming header fields to remove),
``notes`` (free-form facts for later steps, e.g. ``notes["dmarc"]``). ``content`` is never modified:
the body reaches the next hop byte for byte; ``message_bytes()`` builds what is sent.
Client identity for SPF/DMARC: ``tx.client_address`` / ``tx.client_helo`` (from XFORWARD; never
the filter's own peer 127.0.0.1 — None when Postfix did not forward it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from mailpolicy.core.replies import TEMP_FAILURE, Reply
from mailpolicy.esmtp.spool import Content
from mailpolicy.smtp import xforward as xf

log = structlog.get_logger("mailpolicy.filter")

_NAME_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass(slots=True)
class Header:
    """One incoming header field: lower-case name and its raw bytes (folded lines, final CRLF)."""

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value as text (UTF-8, undecodable bytes replaced), stripped."""
        _, _, v = self.raw.partition(b":")
        return re.sub(rb"\r\n([ \t])", rb"\1", v).decode("utf-8", "replace").strip()


def split_headers(content: Content) -> tuple[list[Header], int]:
    """Split the header block off the message: (fields, offset of the body incl. blank line)."""
    if content[:2] == b"\r\n":
        return [], 0
    end = content.find(b"\r\n\r\n")
    end = len(content) if end < 0 else end + 2
    fields: list[Header] = []
    pos = 0
    while pos < end:
        nl = content.find(b"\r\n", pos, end)
        line_end = end if nl < 0 else nl + 2
        line = content[pos:line_end]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].raw += line
        else:
            m = _NAME_RE.match(line)
            if m is None:  # not a header line: the header block ends here (RFC 5322 §2.2)
                return fields, pos
            fields.append(Header(m.group(1).decode("ascii").lower(), line))
        pos = line_end
    return fields, end


def fold(name: str, value: str) -> bytes:
    """A header field `Name: value` folded at spaces near 78 columns, ending with CRLF."""
    if "\r" in value or "\n" in value:
        raise ValueError("header value contains CR or LF")
    out = f"{name}:"
    line_len = len(out)
    for i, word in enumerate(value.split(" ")):
        if i > 0 and line_len + 1 + len(word) > 78:
            out += "\r\n " + word  # the space becomes the fold (unfolding restores it)
            line_len = 1 + len(word)
        else:
            out += " " + word
            line_len += 1 + len(word)
    return (out + "\r\n").encode("utf-8")


@dataclass
class Transaction:
    """The message moving through the steps.

    `mail_from` is "" for the null sender. `rcpt_tos` is the current recipient list (steps rewrite
    it); `original_rcpts` what the client sent. `xforward` holds decoded XFORWARD attributes
    (absent = unavailable). `content` is the message as received (CRLF, dot-unstuffed)."""

    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    xforward: dict[str, str]
    content: Content  # bytes, or an mmap of a spooled message (esmtp/spool.py)
    mode: str = "after-queue"  # "after-queue" | "before-queue"
    id: str = ""
    peer: Any = None  # the SMTP client of the filter (Postfix), not the original client
    helo: str = ""  # EHLO name given by our client (Postfix)
    prepend: list[bytes] = field(default_factory=list)
    strip_headers: set[str] = field(default_factory=set)
    strip_if: list[Callable[[Header], bool]] = field(default_factory=list)
    senders: dict[str, str] = field(default_factory=dict)  # recipient -> envelope sender
    notes: dict[str, Any] = field(default_factory=dict)
    original_rcpts: tuple[str, ...] = ()
    _headers: tuple[list[Header], int] | None = None

    def __post_init__(self) -> None:
        if not self.original_rcpts:
            self.original_rcpts = tuple(self.rcpt_tos)

    # ---- facts
    @property
    def headers(self) -> list[Header]:
        """The incoming header fields, parsed once."""
        if self._headers is None:
            self._headers = split_headers(self.content)
        return self._headers[0]

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [h.value for h in self.headers if h.name == name]

    @property
    def client_address(self) -> str | None:
        return xf.client_address(self.xforward)

    @property
    def client_helo(self) -> str | None:
        return xf.value(self.xforward, "HELO")

    @property
    def queue_id(self) -> str:
        """Upstream (Postfix) queue id from XFORWARD IDENT, else our own id."""
        return xf.value(self.xforward, "IDENT") or self.id

    # ---- changes
    def add_header(self, name: str, value: str) -> None:
        """Prepend `Name: value` (folded); later calls come after earlier ones."""
        self.prepend.append(fold(name, value))

    def message_parts(self) -> list[bytes | memoryview]:
        """What goes to the next hop, in parts that copy nothing large: prepended fields plus
        the incoming header block minus stripped fields, then the rest of the message (a view
        of `content`, byte for byte)."""
        head = b"".join(self.prepend)
        if not self.strip_headers and not self.strip_if:
            return [head, memoryview(self.content)]
        fields, body_at = split_headers(self.content)
        kept = [h.raw for h in fields
                if h.name not in self.strip_headers and not any(p(h) for p in self.strip_if)]
        return [head + b"".join(kept), memoryview(self.content)[body_at:]]

    def message_bytes(self) -> bytes:
        """message_parts() as one bytes object (a copy of the message)."""
        if not self.prepend and not self.strip_headers and not self.strip_if:
            return self.content if isinstance(self.content, bytes) else bytes(self.content)
        return b"".join(self.message_parts())

    def envelopes(self) -> list[tuple[str, list[str]]]:
        """Recipients grouped by envelope sender (original sender first), order kept."""
        groups: dict[str, list[str]] = {}
        for r in self.rcpt_tos:
            groups.setdefault(self.senders.get(r, self.mail_from), []).append(r)
        if self.mail_from in groups:
            first = {self.mail_from: groups.pop(self.mail_from)}
            first.update(groups)
            groups = first
        return list(groups.items())


class Step(Protocol):
    """A named pipeline step; return a Reply to end processing with that answer."""

    name: str

    async def __call__(self, tx: Transaction) -> Reply | None: ...


class Pipeline:
    """Named steps run in order; any exception becomes a 4xx."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no pipeline step named {name!r}") from None

    def insert_before(self, name: str, step: Step) -> None:
        self.steps.insert(self._index(name), step)

    def insert_after(self, name: str, step: Step) -> None:
        self.steps.insert(self._index(name) + 1, step)

    async def run(self, tx: Transaction) -> Reply:
        for step in self.steps:
            try:
                reply = await step(tx)
            except Exception:
                log.exception("filter.step_failed", id=tx.id, queue_id=tx.queue_id,
                              step=step.name)
                return TEMP_FAILURE
            if reply is not None:
                return reply
        log.error("filter.no_reply", id=tx.id, steps=self.names)
        return TEMP_FAILURE
