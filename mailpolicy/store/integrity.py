"""Provisioning that cannot lose mail: redirect, postmaster and copy targets must lead
somewhere, no change may close a redirect loop, and what others depend on is not deleted
silently. Every check goes through resolve(), over the directory as it would be after the
change (an overlay), so the admin API and the mail path can never disagree."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address, split_extension
from mailpolicy.core.directory import Directory, Kind, Resolution, resolve
from mailpolicy.core.model import DefaultAction, Domain, Mailbox
from mailpolicy.store.errors import Conflict, Invalid


class Overlay:
    """A Directory that answers for `domain` (and, when given, `mailbox` under its new
    names) as they would be after the change, and like `base` for everything else."""

    def __init__(self, base: Directory, domain: Domain | None = None,
                 mailbox: Mailbox | None = None) -> None:
        self.base = base
        self.domain = domain
        self.mailbox = mailbox

    async def get_domain(self, name: str) -> Domain | None:
        if self.domain is not None and name == self.domain.name:
            return self.domain
        return await self.base.get_domain(name)

    async def find_mailbox(self, domain: str, local: str) -> tuple[Mailbox, bool] | None:
        mb = self.mailbox
        if mb is not None and domain == mb.domain:
            if local == mb.name:
                return mb, False
            if local in mb.aliases:
                return mb, True
        found = await self.base.find_mailbox(domain, local)
        if found is not None and mb is not None and found[0].id == mb.id:
            return None  # one of the names this change takes away
        return found


def chain(r: Resolution) -> str:
    """`a@x -> b@y -> ...` of a redirect chain (for error messages)."""
    names = [r.address]
    while r.redirect is not None:
        r = r.redirect
        names.append(r.address)
    return " -> ".join(names) + (" -> (again)" if r.loop else "")


async def check_target(directory: Directory, field: str, address: str, what: str) -> None:
    """`address` must be an enabled mailbox or alias here (or postmaster@/abuse@ of a domain
    whose postmaster leads somewhere), or an address in a domain this server does not host."""
    r = await resolve(directory, address)
    if r.kind is Kind.FOREIGN:
        return
    if r.kind is Kind.MAILBOX:
        if r.mailbox is not None and not r.mailbox.enabled:
            raise Invalid(field, f"{what} {r.address} is a disabled mailbox")
        return
    if r.kind is Kind.UNKNOWN and r.role and r.leads_somewhere:
        return
    if r.loop:
        raise Invalid(field, f"{what} {r.address} would close a redirect loop: {chain(r)}")
    raise Invalid(field, f"{what} {r.address} is not a mailbox or alias here (it must exist "
                         "first, or be an address in a domain this server does not host)")


async def check_domain(directory: Directory, proposed: Domain, *, targets: bool = True,
                       postmaster: bool = True) -> None:
    """The domain as it would be after the change: its redirect target (when `targets`) and
    postmaster (when `postmaster`) lead somewhere, and its unknown addresses do not go round
    in a loop."""
    overlay = Overlay(directory, proposed)
    action = proposed.default_action
    if not targets:
        pass
    elif action is DefaultAction.REDIRECT:
        await check_target(overlay, "redirect_to", proposed.redirect_to, "redirect target")
    elif action is DefaultAction.REDIRECT_DOMAIN:
        if await directory.get_domain(proposed.redirect_to) is None:
            raise Invalid("redirect_to", f"redirect-domain target {proposed.redirect_to} is "
                                         "not a domain hosted here")
    if postmaster and proposed.postmaster:
        await check_target(overlay, "postmaster", proposed.postmaster, "postmaster address")
    probe = await resolve(overlay, f"mailpolicy-probe-{secrets.token_hex(6)}@{proposed.name}")
    if probe.loop:
        raise Invalid("redirect_to", f"this change would close a redirect loop: {chain(probe)}")


async def check_copies(directory: Directory, mailbox: Mailbox) -> None:
    """Copies to an address in one of our domains need that mailbox or alias to exist."""
    overlay = Overlay(directory, None, mailbox)
    for c in mailbox.copies_to:
        await check_target(overlay, "copies_to", c, "copy target")


def _key(address: str) -> str | None:
    """The case-folded `local@domain` of an address, without `+extension`."""
    try:
        local, domain = split_address(address)
        return f"{split_extension(local.lower())[0]}@{normalize_domain(domain)}"
    except AddressError:
        return None


@dataclass(slots=True)
class Dependants:
    """What points at a set of addresses: domains redirecting there, mailboxes copying
    there (these refuse a delete), and domains whose postmaster it is (these move on to the
    next mailbox)."""

    redirects: list[Domain] = field(default_factory=list)
    postmasters: list[Domain] = field(default_factory=list)
    copies: list[Mailbox] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.redirects or self.copies)

    def describe(self) -> str:
        parts = [f"domain {d.name} redirects its unknown addresses to "
                 f"{'domain ' if d.default_action is DefaultAction.REDIRECT_DOMAIN else ''}"
                 f"{d.redirect_to}" for d in self.redirects]
        parts += [f"mailbox {m.address} "
                  f"{'forwards (do-not-save)' if m.no_save else 'sends copies'} to it"
                  for m in self.copies]
        return "; ".join(parts)


def dependants(addresses: Iterable[str], domains: Iterable[Domain],
               boxes: Iterable[Mailbox]) -> Dependants:
    """Who depends on `addresses` (pure: over every domain and mailbox)."""
    keys = {k for a in addresses if (k := _key(a)) is not None}
    out = Dependants()
    for d in domains:
        if d.default_action is DefaultAction.REDIRECT and _key(d.redirect_to) in keys:
            out.redirects.append(d)
        if d.postmaster and _key(d.postmaster) in keys:
            out.postmasters.append(d)
    for m in boxes:
        if m.address not in keys and any(_key(c) in keys for c in m.copies_to):
            out.copies.append(m)
    return out


def domain_dependants(name: str, domains: Iterable[Domain], boxes: Iterable[Mailbox],
                      ) -> Dependants:
    """Who, outside domain `name`, depends on it: redirect-domain to it, redirects, postmaster
    settings and copies to addresses in it (pure)."""
    def inside(address: str) -> bool:
        key = _key(address)
        return key is not None and key.rpartition("@")[2] == name

    out = Dependants()
    for d in domains:
        if d.name == name:
            continue
        if (d.default_action is DefaultAction.REDIRECT_DOMAIN and d.redirect_to == name) or (
                d.default_action is DefaultAction.REDIRECT and inside(d.redirect_to)):
            out.redirects.append(d)
        if d.postmaster and inside(d.postmaster):
            out.postmasters.append(d)
    out.copies = [m for m in boxes if m.domain != name and any(inside(c) for c in m.copies_to)]
    return out


def refuse(what: str, deps: Dependants, field: str = "address", force: bool = True) -> None:
    """Deleting `what` would leave `deps` pointing nowhere: refuse, naming them."""
    how = ", or delete with force to clear them too" if force else ""
    raise Conflict(f"{what} is still used: {deps.describe()}. Change those first{how}", field)


def cleared_copies(m: Mailbox, keys: set[str]) -> dict[str, object]:
    """The update that removes the copies to `keys` from `m` (do-not-save off when none is
    left: the mail is then kept in the mailbox)."""
    left = tuple(c for c in m.copies_to if _key(c) not in keys)
    change: dict[str, object] = {"copies_to": left}
    if m.no_save and not left:
        change["no_save"] = False
    return change


def keys_of(addresses: Iterable[str]) -> set[str]:
    return {k for a in addresses if (k := _key(a)) is not None}


def describe_cleared(deps: Dependants, changes: Mapping[str, Mapping[str, object]],
                     postmasters: Mapping[str, str]) -> list[str]:
    """One line per dependant the delete changed (for the API answer and the CLI)."""
    out = [f"domain {d.name}: default action set to reject (was {d.default_action} to "
           f"{d.redirect_to})" for d in deps.redirects]
    out += [f"domain {d.name}: postmaster@ and abuse@ now go to "
            f"{postmasters[d.name] or 'nowhere (refused)'} (was {d.postmaster})"
            for d in deps.postmasters]
    for m in deps.copies:
        line = f"mailbox {m.address}: copy removed"
        if changes.get(m.address, {}).get("no_save") is False:
            line += ", do-not-save turned off (no copy left: mail is kept in the mailbox)"
        out.append(line)
    return out
