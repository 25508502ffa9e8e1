"""Admin API request bodies (typed, bounded) and the JSON views of domains and mailboxes."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from mailpolicy.config import format_size
from mailpolicy.core.model import Autoresponder, Domain, Mailbox
from mailpolicy.core.quota import exceeds_quota

# one-line values: no control characters at all (NUL, CR, LF, ...)
_LINE = r"^[^\x00-\x1f\x7f]*$"
# multi-line text: tabs and line breaks allowed, other controls not
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Line64 = Annotated[str, Meta(max_length=64, pattern=_LINE)]
Line254 = Annotated[str, Meta(max_length=254, pattern=_LINE)]
Line512 = Annotated[str, Meta(max_length=512, pattern=_LINE)]
Line998 = Annotated[str, Meta(max_length=998, pattern=_LINE)]
PathStr = Annotated[str, Meta(max_length=4096, pattern=_LINE)]
Password = Annotated[str, Meta(max_length=1024, pattern=_LINE)]
Text = Annotated[str, Meta(max_length=64 * 1024, pattern=_TEXT)]
SizeValue = Annotated[str, Meta(max_length=32, pattern=_LINE)] | Annotated[int, Meta(ge=0)] | None
Names = Annotated[list[Line254], Meta(max_length=1000)]
Base64 = Annotated[str, Meta(max_length=64 * 1024 * 1024)]


class ApiError(Exception):
    """A refused request: HTTP status, error code, message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DomainFields(_Body, kw_only=True):
    owner: Line64 | UnsetType = UNSET
    outbound_ip: Line64 | UnsetType = UNSET  # an address of the pool, "auto" or ""
    default_action: Literal["reject", "discard", "redirect", "redirect-domain"] | UnsetType = UNSET
    redirect_to: Line254 | UnsetType = UNSET
    dmarc: bool | UnsetType = UNSET
    dmarc_policy: Literal["none", "quarantine", "reject"] | UnsetType = UNSET
    dmarc_rua: Line254 | UnsetType = UNSET
    dmarc_adkim: Literal["r", "s"] | UnsetType = UNSET
    dmarc_aspf: Literal["r", "s"] | UnsetType = UNSET
    tls_cert: PathStr | UnsetType = UNSET
    tls_key: PathStr | UnsetType = UNSET
    postmaster: Line254 | UnsetType = UNSET  # where postmaster@/abuse@ go ("" = nowhere)


class DomainCreate(DomainFields, kw_only=True):
    name: Line254


class MailboxFields(_Body, kw_only=True):
    password: Password | UnsetType | None = UNSET
    aliases: Names | UnsetType = UNSET
    max_size: SizeValue | UnsetType = UNSET
    copies_to: Names | UnsetType = UNSET
    no_save: bool | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class MailboxCreate(MailboxFields, kw_only=True):
    address: Line254
    node: Line64 | UnsetType = UNSET  # home node; unset = the active one with fewest bytes


class AttachmentIn(_Body, kw_only=True):
    filename: Line254
    data: Base64  # base64 of the file's bytes
    content_type: Line254 | UnsetType = UNSET  # ignored: the type is detected


class AutoresponderFields(_Body, kw_only=True):
    enabled: bool | UnsetType = UNSET
    from_: Line512 | UnsetType = msgspec.field(default=UNSET, name="from")
    subject: Line998 | UnsetType = UNSET
    message: Text | UnsetType = UNSET
    start: dt.date | UnsetType | None = UNSET
    end: dt.date | UnsetType | None = UNSET
    interval_days: Annotated[int, Meta(ge=1, le=365)] | UnsetType | None = UNSET
    attachment: AttachmentIn | UnsetType | None = UNSET


class Confirm(_Body, kw_only=True):
    confirm: bool = False
    force: bool = False  # deletes: also clear what points at the deleted thing


TOKEN_TTL_MAX = 3600  # seconds: a log-in-as token is short-lived


class LoginTokenFields(_Body, kw_only=True):
    ttl: Annotated[int, Meta(ge=1, le=TOKEN_TTL_MAX)] | UnsetType = UNSET  # seconds


class LoginAs(_Body, kw_only=True):
    token: Annotated[str, Meta(max_length=128, pattern=_LINE)]


def decode(body: bytes, type_: type[Any], *, immutable: tuple[str, ...] = ()) -> Any:
    """Decode a JSON object into `type_`; errors name the field. Keys in `immutable` are
    refused with a clear message (e.g. a mailbox's name cannot change)."""
    try:
        raw = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError as e:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    for key in immutable:
        if key in raw:
            raise ApiError(422, "invalid", f"{key} cannot be changed after creation", key)
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as e:
        raise ApiError(422, "invalid", _friendly(str(e)), _field_of(str(e))) from None


def _field_of(msg: str) -> str:
    """The top-level request field a msgspec error is about."""
    m = re.search(r"at `\$\.([A-Za-z_]+)", msg)
    if m:
        return m.group(1)
    m = re.search(r"(?:unknown|missing required) field `(.+?)`", msg)
    return m.group(1) if m else ""


def _friendly(msg: str) -> str:
    """msgspec's message in words a panel user reads: no regexes, no RFC numbers, and no
    ` - at `$.field`` suffix when the error is about a top-level field (that is `field`)."""
    msg = re.sub(r"`str` matching regex .*? - at", "text without control characters - at", msg)
    msg = re.sub(r"^Invalid RFC3339 encoded date\b", "Expected a date YYYY-MM-DD", msg)
    return re.sub(r" - at `\$\.[A-Za-z_]+`$", "", msg)


def changes(fields: msgspec.Struct, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields that were given (not UNSET), as keyword arguments."""
    return {f: v for f in fields.__struct_fields__
            if f not in skip and (v := getattr(fields, f)) is not UNSET}


def domain_view(d: Domain, mailbox_count: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": d.name, "unicode_name": _unicode(d.name), "owner": d.owner,
        "outbound_ip": d.outbound_ip, "default_action": str(d.default_action),
        "redirect_to": d.redirect_to, "dmarc": d.dmarc, "dmarc_policy": d.dmarc_policy,
        "dmarc_rua": d.dmarc_rua, "dmarc_adkim": d.dmarc_adkim, "dmarc_aspf": d.dmarc_aspf,
        "tls_cert": d.tls_cert, "tls_key": d.tls_key, "postmaster": d.postmaster,
    }
    if mailbox_count is not None:
        out["mailboxes"] = mailbox_count
    return out


def _unicode(name: str) -> str:
    try:
        import idna

        return idna.decode(name)
    except Exception:
        return name


def mailbox_view(m: Mailbox, used: int | None = None, autoreply_on: bool | None = None,
                 ) -> dict[str, Any]:
    """A mailbox without its password hash; with usage and panel properties when known."""
    out: dict[str, Any] = {
        "address": m.address, "name": m.name, "domain": m.domain,
        "aliases": list(m.aliases), "max_size": m.max_size,
        "max_size_text": format_size(m.max_size), "copies_to": list(m.copies_to),
        "no_save": m.no_save, "enabled": m.enabled, "has_password": bool(m.password_hash),
        "home_node": m.home_node,
    }
    if used is not None:
        out["usage"] = {"used": used, "max": m.max_size}
        out["properties"] = {
            "enabled": m.enabled, "forwards": bool(m.copies_to), "no_save": m.no_save,
            "autoreply": bool(autoreply_on),
            "over_quota": exceeds_quota(used, 0, m.max_size),
        }
    return out


def autoresponder_view(a: Autoresponder | None) -> dict[str, Any]:
    if a is None:
        a = Autoresponder(mailbox_id=0)
    att = a.attachment
    return {
        "enabled": a.enabled, "active": a.active, "from": a.from_, "subject": a.subject,
        "message": a.message,
        "start": a.start.isoformat() if a.start else None,
        "end": a.end.isoformat() if a.end else None,
        "interval_days": a.interval_days,
        "attachment": None if att is None else {
            "filename": att.filename, "content_type": att.content_type, "size": len(att.data)},
    }
