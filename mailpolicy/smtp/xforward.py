"""XFORWARD (Postfix XFORWARD_README) as pure functions: xtext, attribute checks, re-emission."""

from __future__ import annotations

import ipaddress
import re

# Postfix's order: the smtp client sends NAME ADDR PORT, then PROTO HELO IDENT SOURCE.
ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
UNAVAILABLE = "[UNAVAILABLE]"
MAX_VALUE = 255  # per attribute, decoded
MAX_COMMAND = 512  # SMTP command line limit, CRLF included
KEYWORD = "XFORWARD " + " ".join(ATTRIBUTES)

_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


class XForwardError(ValueError):
    """A bad XFORWARD command; the message is the reply text (code 501)."""


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext -> text. `+XX` (upper-case hex) is one byte; bytes are taken as UTF-8."""
    if "+" not in value:
        _check_plain(value)
        return value
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == "+":
            m = _XTEXT_HEX.match(value, i)
            if not m:
                raise XForwardError("malformed xtext")
            out.append(int(m.group(1), 16))
            i += 3
            continue
        _check_plain(c)
        out += c.encode()
        i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        return out.decode("latin-1")


def _check_plain(text: str) -> None:
    for ch in text:
        if not ("!" <= ch <= "~") or ch == "=":
            raise XForwardError("malformed xtext")


def xtext_encode(value: str) -> str:
    """Text -> RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII become `+XX`."""
    out = []
    for b in value.encode():
        if 33 <= b <= 126 and b not in (0x2B, 0x3D):
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


def _check_value(name: str, value: str) -> str:
    if len(value) > MAX_VALUE:
        raise XForwardError(f"{name} value too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise XForwardError(f"bad {name} value")
    if value.upper() == UNAVAILABLE:
        return UNAVAILABLE
    if name == "ADDR":
        addr = value[5:] if value.upper().startswith("IPV6:") else value
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise XForwardError("bad ADDR value") from None
    elif name == "PORT":
        if not value.isdigit() or int(value) > 65535:
            raise XForwardError("bad PORT value")
    elif name == "SOURCE":
        if value.upper() not in ("LOCAL", "REMOTE"):
            raise XForwardError("bad SOURCE value")
        return value.upper()
    return value


def parse(arg: str | None) -> dict[str, str]:
    """`NAME=x ADDR=y` -> {"NAME": "x", "ADDR": "y"}, decoded and checked; XForwardError if bad."""
    if not arg or not arg.strip():
        raise XForwardError("Syntax: XFORWARD attribute=value...")
    attrs: dict[str, str] = {}
    for item in arg.split():
        name, eq, raw = item.partition("=")
        name = name.upper()
        if not eq or not name:
            raise XForwardError("Syntax: XFORWARD attribute=value...")
        if name not in ATTRIBUTES:
            raise XForwardError(f"Bad XFORWARD attribute name: {name}")
        attrs[name] = _check_value(name, xtext_decode(raw))
    return attrs


def update(current: dict[str, str] | None, new: dict[str, str]) -> dict[str, str]:
    """Apply one command: the first XFORWARD of a session makes every attribute unavailable
    (we keep only named ones; absent means unavailable), later ones update what they name."""
    merged = dict(current or {})
    merged.update(new)
    return merged


def announced(ehlo_value: str | None) -> set[str]:
    """Attribute names in the next hop EHLO line `XFORWARD NAME ADDR ...` (None: not offered)."""
    if ehlo_value is None:
        return set()
    return {w.upper() for w in ehlo_value.split()} & set(ATTRIBUTES)


def commands(attrs: dict[str, str], allowed: set[str]) -> list[str]:
    """XFORWARD command lines (without CRLF) carrying the allowed attributes, each < 512 bytes."""
    items = [f"{n}={xtext_encode(attrs[n])}" for n in ATTRIBUTES if n in attrs and n in allowed]
    out: list[str] = []
    line = ""
    for item in items:
        if len(item) + len("XFORWARD ") + 2 > MAX_COMMAND:
            continue  # cannot be sent whole: leave it unavailable at the next hop
        candidate = f"{line} {item}" if line else f"XFORWARD {item}"
        if line and len(candidate) + 2 > MAX_COMMAND:
            out.append(line)
            candidate = f"XFORWARD {item}"
        line = candidate
    if line:
        out.append(line)
    return out


def client_address(attrs: dict[str, str]) -> str | None:
    """The original client IP (no `IPV6:` prefix), or None when not forwarded/unavailable."""
    addr = attrs.get("ADDR")
    if not addr or addr == UNAVAILABLE:
        return None
    return addr[5:] if addr.upper().startswith("IPV6:") else addr


def value(attrs: dict[str, str], name: str) -> str | None:
    """An attribute's value, or None when absent or `[UNAVAILABLE]`."""
    v = attrs.get(name)
    return None if v is None or v == UNAVAILABLE else v
