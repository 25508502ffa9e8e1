"""Provisioning that cannot lose mail: redirect, postmaster and copy targets must lead
somewhere, no change may close a redirect loop, and what others depend on is not deleted
silently. Every check goes through resolve(), over the directory as it would be after the
change (an overlay), so the admin API and the mail path can never disagree."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address, split_extension
from mailpolicy.core.directory import Directory, Kind, Resolution, resolve
from mailpolicy.core.model import DefaultAction, Domain, Mailbox
from mailpolicy.store.errors import Conflict, Invalid
from mailpolicy.store.schema import copies as copies_t
from mailpolicy.store.schema import domains as domains_t
from mailpolicy.store.schema import mailboxes as mailboxes_t


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


def key(address: str) -> str | None:
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
    keys = {k for a in addresses if (k := key(a)) is not None}
    out = Dependants()
    for d in domains:
        if d.default_action is DefaultAction.REDIRECT and key(d.redirect_to) in keys:
            out.redirects.append(d)
        if d.postmaster and key(d.postmaster) in keys:
            out.postmasters.append(d)
    for m in boxes:
        if m.address not in keys and any(key(c) in keys for c in m.copies_to):
            out.copies.append(m)
    return out


def domain_dependants(name: str, domains: Iterable[Domain], boxes: Iterable[Mailbox],
                      ) -> Dependants:
    """Who, outside domain `name`, depends on it: redirect-domain to it, redirects, postmaster
    settings and copies to addresses in it (pure)."""
    def inside(address: str) -> bool:
        k = key(address)
        return k is not None and k.rpartition("@")[2] == name

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


def keys_of(addresses: Iterable[str]) -> set[str]:
    return {k for a in addresses if (k := key(a)) is not None}


@dataclass(slots=True)
class Clearing:
    """What a forced delete changes besides the deletion (planned before the write)."""

    deps: Dependants
    copies: dict[str, dict[str, Any]]  # mailbox address -> copies_to (and no_save=False)
    postmasters: dict[str, str]  # domain -> its new postmaster ("" = none)

    def lines(self) -> list[str]:
        """One line per dependant changed (for the API answer, the CLI and the audit)."""
        out = [f"domain {d.name}: default action set to reject (was {d.default_action} to "
               f"{d.redirect_to})" for d in self.deps.redirects]
        out += [f"domain {d.name}: postmaster@ and abuse@ now go to "
                f"{self.postmasters[d.name] or 'nowhere (refused)'} (was {d.postmaster})"
                for d in self.deps.postmasters]
        for m in self.deps.copies:
            line = f"mailbox {m.address}: copy removed"
            if self.copies[m.address].get("no_save") is False:
                line += ", do-not-save turned off (no copy left: mail is kept in the mailbox)"
            out.append(line)
        return out


def plan_clearing(deps: Dependants, gone: Callable[[str], bool], boxes: Iterable[Mailbox],
                  fallback_postmaster: str, deleted: Iterable[int] = ()) -> Clearing:
    """The changes that clear `deps` when the addresses for which `gone` holds disappear:
    copies there removed (do-not-save off when none is left), redirects set to reject,
    postmasters moved to the domain's first remaining mailbox (else `fallback_postmaster`)."""
    copies_plan: dict[str, dict[str, Any]] = {}
    for m in deps.copies:
        left = tuple(c for c in m.copies_to if not gone(c))
        copies_plan[m.address] = {"copies_to": left, **(
            {"no_save": False} if m.no_save and not left else {})}
    skip = set(deleted)
    remaining = sorted((m for m in boxes if m.id not in skip), key=lambda m: m.id)
    postmasters = {d.name: next((m.address for m in remaining if m.domain == d.name),
                                fallback_postmaster) for d in deps.postmasters}
    return Clearing(deps, copies_plan, postmasters)


async def apply_clearing(conn: AsyncConnection, plan: Clearing) -> None:
    """Write a Clearing inside the delete's transaction."""
    for d in plan.deps.redirects:
        await conn.execute(domains_t.update().where(domains_t.c.id == d.id).values(
            default_action=DefaultAction.REJECT.value, redirect_to=""))
    for d in plan.deps.postmasters:
        await conn.execute(domains_t.update().where(domains_t.c.id == d.id).values(
            postmaster=plan.postmasters[d.name]))
    for m in plan.deps.copies:
        change = plan.copies[m.address]
        await conn.execute(copies_t.delete().where(copies_t.c.mailbox_id == m.id))
        for i, c in enumerate(change["copies_to"]):
            await conn.execute(copies_t.insert().values(mailbox_id=m.id, address=c,
                                                        position=i))
        if "no_save" in change:
            await conn.execute(mailboxes_t.update().where(mailboxes_t.c.id == m.id)
                               .values(no_save=False))
