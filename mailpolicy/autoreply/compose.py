"""Build the auto-reply message (RFC 3834 §3, RFC 5230 §5) with the stdlib email package."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from mailpolicy.autoreply.suppress import Headers, get_all
from mailpolicy.core.model import Autoresponder, Mailbox

DEFAULT_SUBJECT = "Automated reply"  # RFC 5230 §5 when the original has no subject
SUBJECT_PREFIX = "Auto: "
MAX_SUBJECT = 200  # characters of the generated subject (Pigeonhole truncates too)
MAX_REFERENCES = 20  # msg-ids kept in References
_MSGID_RE = re.compile(r"<[^<>\s\x00-\x1f\x7f]{1,250}>")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_CTYPE_RE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")


class ComposeError(ValueError):
    """A configured header value is unusable (CR/LF/NUL: header injection is refused)."""


def _refuse_injection(value: str, field: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ComposeError(f"{field}: CR, LF and NUL are not allowed in a header")
    return value


def response_key(ar: Autoresponder) -> str:
    """A hash identifying the response (RFC 5230 §4.2): from, subject, message and attachment,
    each length-prefixed so the same text in different fields never collides. Changing any of
    them restarts the once-per-interval tracking."""
    h = hashlib.sha256()
    parts = [ar.from_, ar.subject, ar.message]
    if ar.attachment is not None:
        att = ar.attachment
        parts += [att.filename, att.content_type, hashlib.sha256(att.data).hexdigest()]
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(raw) + raw)
    return h.hexdigest()


def _decoded(value: str) -> str:
    """An original header value with RFC 2047 words decoded and control characters made
    spaces (the sender controls it: it must never break our header)."""
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    return " ".join(_CONTROL_RE.sub(" ", text).split())


def reply_subject(ar: Autoresponder, original: Headers) -> str:
    """The configured subject, else `Auto: ` + the original subject, else DEFAULT_SUBJECT."""
    if ar.subject.strip():
        return _refuse_injection(ar.subject, "subject").strip()
    subjects = get_all(original, "subject")
    orig = _decoded(subjects[0]) if subjects else ""
    if not orig:
        return DEFAULT_SUBJECT
    subject = SUBJECT_PREFIX + orig
    return subject if len(subject) <= MAX_SUBJECT else subject[: MAX_SUBJECT - 1] + "…"


def reply_from(ar: Autoresponder, mailbox: Mailbox, alias: str | None = None) -> Address:
    """The configured from ("Name <addr>"), else the alias address the sender wrote to (when
    given), else the mailbox address. A from without a usable address is ignored (RFC 5230
    §4.3); CR/LF/NUL raise ComposeError."""
    raw = _refuse_injection(ar.from_, "from").strip()
    if raw:
        pairs = getaddresses([raw])
        if len(pairs) == 1 and pairs[0][1].count("@") == 1:
            name, addr = pairs[0]
            local, _, domain = addr.partition("@")
            if local and domain:
                return Address(display_name=name, username=local, domain=domain)
    if alias:
        local, _, domain = alias.rpartition("@")
        return Address(username=local, domain=domain)
    return Address(username=mailbox.name, domain=mailbox.domain)


def _msgids(value: str) -> list[str]:
    return _MSGID_RE.findall(value)


def threading_headers(original: Headers) -> tuple[str | None, str | None]:
    """(In-Reply-To, References) per RFC 5322 §3.6.4, or (None, None) without a Message-ID."""
    ids = [i for v in get_all(original, "message-id") for i in _msgids(v)]
    if not ids:
        return None, None
    parent = ids[0]
    refs = [i for v in get_all(original, "references") for i in _msgids(v)]
    if not refs:
        refs = [i for v in get_all(original, "in-reply-to") for i in _msgids(v)][:1]
    chain = [*refs[-(MAX_REFERENCES - 1):], parent]
    return parent, " ".join(chain)


def _cte(text: str) -> str:
    if text.isascii() and all(len(line) <= 78 for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


def compose(mailbox: Mailbox, ar: Autoresponder, *, recipient: str, original: Headers,
            hostname: str, now: dt.datetime | None = None,
            alias: str | None = None) -> EmailMessage:
    """The reply to `recipient` (the envelope sender of the original), from `alias` when the
    sender wrote to that alias and no from is configured. Raises ComposeError when the
    configured subject or from holds CR/LF/NUL."""
    _refuse_injection(recipient, "recipient")
    msg = EmailMessage(policy=policy.SMTP if recipient.isascii() else policy.SMTPUTF8)
    msg["From"] = reply_from(ar, mailbox, alias)
    msg["To"] = recipient
    msg["Subject"] = reply_subject(ar, original)
    msg["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=_refuse_injection(hostname or mailbox.domain,
                                                            "hostname"))
    in_reply_to, references = threading_headers(original)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = references
    msg["Auto-Submitted"] = "auto-replied"
    msg["Precedence"] = "bulk"
    msg["X-Auto-Response-Suppress"] = "All"
    text = ar.message.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    msg.set_content(text, charset="utf-8", cte=_cte(text))
    if ar.attachment is not None:
        att = ar.attachment
        ctype = att.content_type.strip().lower()
        if not _CTYPE_RE.match(ctype) or ctype.startswith(("multipart/", "message/")):
            ctype = "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        filename = _CONTROL_RE.sub("", att.filename).replace("/", "_").replace("\\", "_")
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype,
                           filename=filename or "attachment")
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """The message as CRLF wire bytes."""
    return msg.as_bytes(policy=msg.policy)
