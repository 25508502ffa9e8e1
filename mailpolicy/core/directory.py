"""The Directory interface and resolve(): THE recipient resolver used by every service."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address, split_extension
from mailpolicy.core.model import DefaultAction, Domain, Mailbox

MAX_REDIRECT_HOPS = 8
# Addresses every hosted domain accepts (RFC 5321 4.5.1, RFC 2142): delivered to the domain's
# postmaster address unless a mailbox or alias of that name exists.
ROLE_NAMES = frozenset({"postmaster", "abuse"})


class Directory(Protocol):
    """Read-only view of the store that resolve() needs."""

    async def get_domain(self, name: str) -> Domain | None:
        """The local domain with this A-label name, or None."""
        ...

    async def find_mailbox(self, domain: str, local: str) -> tuple[Mailbox, bool] | None:
        """The mailbox whose name or alias is `local` in `domain`, and whether an alias matched."""
        ...


class StoreDirectory(Directory, Protocol):
    """The Directory the store hands the services: it also tells when its answers may have
    changed, for their caches (core.cache.CachedDirectory.for_store)."""

    @property
    def version(self) -> int:
        """Bumped by every directory write of this process."""
        ...

    def generation(self) -> object | None:
        """Moved by every directory write of any process; None when it cannot be read
        without waiting (then only a TTL bounds how stale a cached answer is)."""
        ...

    @property
    def reads_synchronously(self) -> bool:
        """get_domain and find_mailbox never wait: their coroutines finish on the first step."""
        ...


class Kind(StrEnum):
    MAILBOX = "mailbox"  # a mailbox, directly or through an alias
    UNKNOWN = "unknown"  # no such address in a local domain: the domain's default action
    FOREIGN = "foreign"  # not one of our domains
    INVALID = "invalid"  # not a parseable address


@dataclass(frozen=True, slots=True)
class Resolution:
    """What an address means. For UNKNOWN with a redirect action, `redirect` is where it goes
    (already resolved again); `loop` is set when the redirect chain looped or ran too long."""

    address: str
    kind: Kind
    domain: Domain | None = None
    mailbox: Mailbox | None = None
    via_alias: bool = False
    extension: str | None = None
    redirect: Resolution | None = None
    loop: bool = False
    role: bool = False  # postmaster@/abuse@ without a mailbox: redirected to the postmaster

    @property
    def action(self) -> DefaultAction | None:
        if self.kind is not Kind.UNKNOWN or self.domain is None:
            return None
        return DefaultAction.REDIRECT if self.role else self.domain.default_action

    @property
    def final(self) -> Resolution:
        """The end of the redirect chain (self when there is none)."""
        r = self
        while r.redirect is not None:
            r = r.redirect
        return r

    @property
    def is_local(self) -> bool:
        return self.kind in (Kind.MAILBOX, Kind.UNKNOWN)

    @property
    def accepted_at_rcpt(self) -> bool:
        """Whether Postfix should accept this recipient at RCPT time: a mailbox or alias, an
        unknown address the admin asked to discard, or one whose whole redirect chain ends
        in an enabled mailbox, a discard or a domain we do not host. Everything else leads
        nowhere and is refused (550 5.1.1), so nothing is accepted that cannot be delivered."""
        if self.kind is Kind.MAILBOX:
            return True
        if self.kind is not Kind.UNKNOWN:
            return False
        return self.leads_somewhere

    @property
    def leads_somewhere(self) -> bool:
        """This address (and its redirect chain) reaches an enabled mailbox, a domain we do not
        host, or a discard the admin asked for; False for loops, reject actions, disabled
        mailboxes and unparsable targets at the end of the chain."""
        if self.loop:
            return False
        if self.kind is Kind.MAILBOX:
            return self.mailbox is not None and self.mailbox.enabled
        if self.kind is Kind.FOREIGN:
            return True
        if self.kind is not Kind.UNKNOWN:
            return False
        action = self.action
        if action is DefaultAction.DISCARD:
            return True
        if action is DefaultAction.REJECT or self.redirect is None:
            return False
        return self.redirect.leads_somewhere


async def resolve(directory: Directory, address: str, *, _seen: frozenset[str] = frozenset(),
                  ) -> Resolution:
    """Resolve an envelope address: exact mailbox > exact alias > `+ext`-stripped mailbox or
    alias > the domain's default action. Domains are IDNA/case-folded, local parts of our
    domains case-folded. Redirect chains are followed, bounded, and loops flagged."""
    try:
        local, raw_domain = split_address(address)
        domain_name = normalize_domain(raw_domain)
    except AddressError:
        return Resolution(address=address, kind=Kind.INVALID)
    domain = await directory.get_domain(domain_name)
    if domain is None:
        return Resolution(address=f"{local}@{domain_name}", kind=Kind.FOREIGN)
    folded = local.lower()
    addr = f"{folded}@{domain_name}"
    found = await directory.find_mailbox(domain_name, folded)
    extension = None
    if found is None:
        base, extension = split_extension(folded)
        if extension is not None:
            found = await directory.find_mailbox(domain_name, base)
    if found is not None:
        mailbox, via_alias = found
        return Resolution(address=addr, kind=Kind.MAILBOX, domain=domain, mailbox=mailbox,
                          via_alias=via_alias, extension=extension)
    role = bool(domain.postmaster) and (
        folded in ROLE_NAMES or split_extension(folded)[0] in ROLE_NAMES)
    unknown = Resolution(address=addr, kind=Kind.UNKNOWN, domain=domain, role=role)
    action = unknown.action
    if action not in (DefaultAction.REDIRECT, DefaultAction.REDIRECT_DOMAIN):
        return unknown
    seen = _seen | {addr}
    target = (domain.postmaster if role else domain.redirect_to
              if action is DefaultAction.REDIRECT else f"{folded}@{domain.redirect_to}")
    if len(seen) > MAX_REDIRECT_HOPS:
        return Resolution(address=addr, kind=Kind.UNKNOWN, domain=domain, loop=True, role=role)
    try:
        t_local, t_domain = split_address(target)
        target_key = f"{t_local.lower()}@{normalize_domain(t_domain)}"
    except AddressError:
        return unknown
    if target_key in seen:
        return Resolution(address=addr, kind=Kind.UNKNOWN, domain=domain, loop=True, role=role)
    redirect = await resolve(directory, target, _seen=seen)
    return Resolution(address=addr, kind=Kind.UNKNOWN, domain=domain, redirect=redirect,
                      loop=redirect.final.loop, role=role)
