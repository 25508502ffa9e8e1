"""Who may send as an address: THE sender-ownership rule (socketmap `senders` and the filter's
From check both ask it). A mailbox owns its address, its aliases and their `+ext` forms; an
admin may grant it more addresses (`user@domain`) or a whole domain (`@domain`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address, split_extension
from mailpolicy.core.directory import Directory, Kind, resolve

GrantLookup = Callable[[str, str], Awaitable[list[str]]]  # (address, @domain) -> logins


def grant_keys(address: str) -> tuple[str, str] | None:
    """(`local@domain` without +ext, lowercased; `@domain`) of a sender address, None if it is
    not an address."""
    try:
        local, raw_domain = split_address(address)
        domain = normalize_domain(raw_domain)
    except AddressError:
        return None
    base, _ext = split_extension(local.lower())
    return f"{base}@{domain}", f"@{domain}"


def normalize_grant(value: str) -> str:
    """A grant as stored: `local@domain` (lowercase, no +ext) or `@domain`; ValueError if not."""
    v = value.strip().lower()
    if v.startswith("@"):
        try:
            return "@" + normalize_domain(v[1:])
        except AddressError as e:
            raise ValueError(str(e)) from None
    keys = grant_keys(v)
    if keys is None or "+" in v.partition("@")[0][1:]:
        raise ValueError(f"not an address or @domain: {value!r}")
    return keys[0]


async def owners(directory: Directory, address: str, grants: GrantLookup | None) -> list[str]:
    """The logins (mailbox addresses) that may use `address` as their sender, in a stable order;
    empty when nobody may (the null sender is never asked: Postfix does not check it)."""
    out: list[str] = []
    r = await resolve(directory, address)
    if r.kind is Kind.MAILBOX and r.mailbox is not None and r.mailbox.enabled:
        out.append(r.mailbox.address)
    keys = grant_keys(address)
    if grants is not None and keys is not None:
        for login in await grants(*keys):
            if login not in out:
                out.append(login)
    return out


def grant_lookup(directory: Directory) -> GrantLookup | None:
    """The store's sender grants behind a (cached) directory, when it has them."""
    store = getattr(directory, "store", directory)
    sending = getattr(store, "sending", None)
    return getattr(sending, "granted", None)
