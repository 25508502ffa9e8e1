"""Addresses and names: parsing, case-folding, IDNA, `+extension`, and the name rules."""

from __future__ import annotations

import functools
import re

import idna

RECIPIENT_DELIMITER = "+"
MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 254

_NAME_RE = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)*$")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# characters never allowed anywhere in an address we store or route
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>()\[\]\\,;:\"]")


class AddressError(ValueError):
    """An address or name is not valid; the message says why."""


@functools.lru_cache(maxsize=4096)  # per RCPT lookup; a few domains make most of the traffic
def normalize_domain(name: str) -> str:
    """Return the domain in lowercase ASCII (A-labels); raise AddressError if invalid."""
    raw = name.strip().rstrip(".")
    if not raw:
        raise AddressError("empty domain")
    if any(c in raw for c in "/\\\x00 @") or ".." in raw:
        raise AddressError(f"invalid domain: {name!r}")
    try:
        ascii_name = raw.lower() if raw.isascii() else idna.encode(raw, uts46=True).decode()
    except idna.IDNAError as e:
        raise AddressError(f"invalid domain: {name!r} ({e})") from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > MAX_DOMAIN:
        raise AddressError(f"domain too long: {name!r}")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise AddressError(f"domain needs at least two labels: {name!r}")
    for label in labels:
        if not _LABEL_RE.match(label):
            raise AddressError(f"invalid domain label {label!r} in {name!r}")
    if labels[-1].isdigit():
        raise AddressError(f"invalid top-level label in {name!r}")
    return ascii_name


def validate_name(name: str, what: str = "name") -> str:
    """Mailbox/alias name rule: lowercase Latin letters, digits, `-`, `.` (not leading,
    trailing or doubled); at most 64 characters. Returns the name."""
    if not name:
        raise AddressError(f"{what} is empty")
    if len(name) > MAX_LOCAL:
        raise AddressError(f"{what} is longer than {MAX_LOCAL} characters")
    if not _NAME_RE.match(name):
        raise AddressError(
            f"{what} {name!r} may only contain lowercase Latin letters, digits, '-' and '.'"
            " (no leading, trailing or doubled '.')")
    return name


def split_address(address: str) -> tuple[str, str]:
    """Split `local@domain` (angle brackets allowed) into (local, domain) without folding."""
    addr = address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"not an address: {address!r}")
    if len(addr) > MAX_ADDRESS * 4 or (_FORBIDDEN.search(local.strip('"')) and not (
            local.startswith('"') and local.endswith('"'))):
        raise AddressError(f"invalid address: {address!r}")
    return local, domain


def normalize_address(address: str) -> str:
    """`Local@Dömain.` -> `Local@xn--dmain-jua` : domain folded to A-labels, local part kept."""
    local, domain = split_address(address)
    if "\x00" in local or "\r" in local or "\n" in local:
        raise AddressError(f"invalid address: {address!r}")
    return f"{local}@{normalize_domain(domain)}"


def split_extension(local: str, delimiter: str = RECIPIENT_DELIMITER) -> tuple[str, str | None]:
    """`user+tag` -> (`user`, `tag`); `user` -> (`user`, None). A leading delimiter is kept."""
    if delimiter and delimiter in local[1:]:
        base, _, ext = local.partition(delimiter)
        if base:
            return base, ext
    return local, None


def parse_target(value: str, default_domain: str | None = None) -> str:
    """A forwarding target: a full address, or a local name of `default_domain`."""
    v = value.strip()
    if "@" not in v:
        if default_domain is None:
            raise AddressError(f"not an address: {value!r}")
        validate_name(v, "local name")
        return f"{v}@{default_domain}"
    return normalize_address(v)
