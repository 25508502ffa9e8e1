"""Pure validation of provisioning values: each function returns the normalised value or
raises Invalid naming the field."""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import re
from collections.abc import Iterable

from mailpolicy.config import parse_size
from mailpolicy.core.addresses import AddressError, normalize_domain, parse_target, validate_name
from mailpolicy.core.model import DefaultAction
from mailpolicy.store.errors import Invalid

MAX_TEXT = 64 * 1024
MAX_SUBJECT = 250
MAX_OWNER = 64
MIN_PASSWORD = 8  # characters; config: provisioning.min_password_length
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def domain_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    try:
        return normalize_domain(value)
    except AddressError as e:
        raise Invalid(field, str(e)) from None


def mailbox_name(value: object, field: str = "name", what: str = "") -> str:
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    try:
        return validate_name(value, what or field)
    except AddressError as e:
        raise Invalid(field, str(e)) from None


def owner(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_OWNER or _CTRL.search(value) or (
            value and not re.fullmatch(r"[A-Za-z0-9_.@-]+", value)):
        raise Invalid("owner", f"owner must be a user name of at most {MAX_OWNER} characters")
    return value


def default_action(value: object) -> DefaultAction:
    try:
        return DefaultAction(str(value))
    except ValueError:
        raise Invalid("default_action", "must be one of " + ", ".join(
            a.value for a in DefaultAction)) from None


def redirect_to(action: DefaultAction, value: object, domain: str) -> str:
    """The redirect target the action needs: an address, or a domain other than this one."""
    v = value if isinstance(value, str) else ""
    if action is DefaultAction.REDIRECT:
        try:
            return parse_target(v)
        except AddressError as e:
            raise Invalid("redirect_to", f"redirect needs an address: {e}") from None
    if action is DefaultAction.REDIRECT_DOMAIN:
        target = domain_name(v, "redirect_to")
        if target == domain:
            raise Invalid("redirect_to", "a domain cannot redirect to itself")
        return target
    if v:
        raise Invalid("redirect_to",
                      f"redirect_to is only used with redirect actions, not {action}")
    return ""


def postmaster(value: object) -> str:
    """Where postmaster@ and abuse@ go: an address, or "" (none)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise Invalid("postmaster", "must be an address")
    try:
        return parse_target(value)
    except AddressError as e:
        raise Invalid("postmaster", f"postmaster needs an address: {e}") from None


def password_strength(password: str, address: str, minimum: int) -> None:
    """Refuse a password shorter than `minimum` characters or equal to the address."""
    if len(password) < minimum:
        raise Invalid("password", f"password is shorter than {minimum} characters")
    local = address.partition("@")[0]
    if password.strip().lower() in (address.lower(), local.lower()):
        raise Invalid("password", "password must not be the mailbox's address or name")


def ip_address(value: object, pool: Iterable[str]) -> str:
    v = str(value)
    try:
        ip = str(ipaddress.ip_address(v))
    except ValueError:
        raise Invalid("outbound_ip", f"not an IP address: {v!r}") from None
    if ip not in set(pool):
        raise Invalid("outbound_ip", f"{ip} is not in the outbound IP pool")
    return ip


def max_size(value: object) -> int | None:
    if value is None or value == "unlimited" or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid("max_size", "must be a size like 500M, 2G or unlimited")
    try:
        n = parse_size(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        if "too large" in str(e):
            raise Invalid("max_size", str(e)) from None
        raise Invalid("max_size", "must be a size like 500M, 2G or unlimited") from None
    if n <= 0:
        raise Invalid("max_size", "must be positive (or unlimited)")
    return n


def alias_names(values: object, mailbox: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = values.split()
    if not isinstance(values, (list, tuple)):
        raise Invalid("aliases", "must be a list of names")
    out: list[str] = []
    for v in values:
        if isinstance(v, str) and "@" in v:
            raise Invalid("aliases", f"aliases are names in the mailbox's domain, not {v!r}")
        name = mailbox_name(v, "aliases", "alias")
        if name == mailbox:
            raise Invalid("aliases", f"alias {name!r} is the mailbox's own name")
        if name not in out:
            out.append(name)
    return tuple(out)


def copy_targets(values: object, domain: str, own: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = values.split()
    if not isinstance(values, (list, tuple)):
        raise Invalid("copies_to", "must be a list of addresses")
    out: list[str] = []
    for v in values:
        if not isinstance(v, str):
            raise Invalid("copies_to", "must be a list of addresses")
        try:
            addr = parse_target(v, domain)
        except AddressError as e:
            raise Invalid("copies_to", str(e)) from None
        if addr.lower() == own:
            raise Invalid("copies_to", "a mailbox cannot send copies to itself")
        if addr not in out:
            out.append(addr)
    return tuple(out)


def header_text(value: object, field: str, limit: int) -> str:
    """A value that goes into a mail header: no CR/LF/NUL, bounded."""
    if not isinstance(value, str):
        raise Invalid(field, "must be a string")
    if _CTRL.search(value) or "\r" in value or "\n" in value:
        raise Invalid(field, "must not contain line breaks or control characters")
    if len(value) > limit:
        raise Invalid(field, f"longer than {limit} characters")
    return value


def from_header(value: object) -> str:
    v = header_text(value, "from", 512)
    if not v:
        return ""
    _name, addr = email.utils.parseaddr(v)
    try:
        parse_target(addr)
    except AddressError:
        raise Invalid("from", f"not a 'Name <address>' value: {v!r}") from None
    return v


def message_text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("message", "must be a string")
    if "\x00" in value or len(value) > MAX_TEXT:
        raise Invalid("message", f"must be text of at most {MAX_TEXT} characters")
    return value


def date_or_none(value: object, field: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise Invalid(field, "must be a date YYYY-MM-DD") from None


def filename(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or "/" in value or (
            "\\" in value or value in (".", "..") or _CTRL.search(value) or "\r" in value
            or "\n" in value):
        raise Invalid("attachment", "attachment needs a plain file name (no path)")
    return value
