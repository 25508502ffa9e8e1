"""Which reinjection listener mail mailpolicy sends itself goes to (copies, autoreplies)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from mailpolicy.config import Config, ConfigError
from mailpolicy.core import outbound
from mailpolicy.core.addresses import AddressError, normalize_domain, split_address
from mailpolicy.core.directory import Directory
from mailpolicy.core.outbound import Reinjection
from mailpolicy.core.srs import srs_domain

log = structlog.get_logger("mailpolicy.route")

T = TypeVar("T")


def _own_names(cfg: Config) -> frozenset[str]:
    """This host's own mail names (the SRS domain, the filter's host name): Postfix delivers
    them itself (mydestination, the SRS bounces), so they are never "another domain"."""
    names: set[str] = set()
    try:
        names.add(srs_domain(cfg))
    except ConfigError:  # the daemon refuses to start then; nothing to add
        pass
    try:
        names.add(normalize_domain(cfg.hostname))
    except AddressError:
        pass
    return frozenset(names)


class Routes:
    """The routed reinjection listeners of one config (as `postfix-config` emits them for
    the pool) and the route of each recipient; warns once per domain about a forwarded copy
    or reply that cannot leave from its domain's address."""

    def __init__(self, cfg: Config, ips: tuple[str, ...]) -> None:
        self.plain = cfg.reinject.port
        try:
            self.ports = outbound.routed_ports(cfg, ips)
        except ConfigError as e:  # postfix-config refuses it too: no routed listener exists
            log.error("route.no_routed_listeners", error=str(e))
            self.ports = {}
        self._warned: set[str] = set()
        self.own = _own_names(cfg)

    async def external(self, directory: Directory, address: str) -> bool:
        """Whether `address` is outside our domains and this host's own names (an
        unparseable one counts as ours: it takes the plain path, where Postfix decides)."""
        try:
            _, domain = split_address(address)
            domain = normalize_domain(domain)
        except AddressError:
            return False
        return domain not in self.own and await directory.get_domain(domain) is None

    async def target(self, directory: Directory, domain: str, recipient: str) -> Reinjection:
        """Where mail sent on behalf of our `domain` to `recipient` goes back into Postfix."""
        if not await self.external(directory, recipient):
            return Reinjection(self.plain)
        d = await directory.get_domain(domain)
        r = outbound.reinjection(self.plain, self.ports, d.outbound_ip if d else "", True)
        if r.fallback and domain not in self._warned:
            self._warned.add(domain)
            log.warning("route.plain_reinjection", domain=domain, reason=r.fallback,
                        detail="its forwarded copies and autoreplies leave from Postfix's "
                               "default address")
        return r


@functools.lru_cache(maxsize=4)
def routes_for(cfg: Config) -> Routes:
    """The Routes of `cfg` over its outbound pool (computed once per config)."""
    return Routes(cfg, outbound.pool(cfg))


async def routed(connect: Callable[[int], Awaitable[T]], port: int, **ctx: object) -> T | None:
    """`connect(port)` to a routed listener; None (logged) when it cannot be reached: then the
    caller takes the plain reinjection (the mail leaves from Postfix's default address, but
    is never lost)."""
    try:
        return await connect(port)
    except Exception as e:  # refused, reset, no greeting: nothing was sent yet
        log.warning("route.routed_unavailable", port=port, error=f"{type(e).__name__}: {e}",
                    detail="falling back to the plain reinjection; is the routed listener "
                           "from `mailpolicy postfix-config` in master.cf?", **ctx)
        return None
