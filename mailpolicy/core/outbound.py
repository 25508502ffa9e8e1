"""Outbound IP pool: the configured or the host's own addresses, and their transport names."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from mailpolicy.config import Config


def routable(ip: str) -> bool:
    """Whether mail can leave from `ip` for other hosts: not loopback, link-local,
    unspecified or multicast."""
    a = ipaddress.ip_address(ip)
    return not (a.is_loopback or a.is_link_local or a.is_unspecified or a.is_multicast)


def interface_addresses() -> list[str]:
    """Every IPv4 address of the host's network interfaces (getifaddrs, via ifaddr)."""
    import ifaddr

    return [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
            if not ip.is_IPv6 and isinstance(ip.ip, str)]


def host_addresses(found: list[str] | None = None) -> tuple[str, ...]:
    """The host's own routable IPv4 addresses, from its interfaces (not from resolving the
    host name, which Debian maps to 127.0.1.1); empty when it has none."""
    addrs = interface_addresses() if found is None else found
    return tuple(sorted({a for a in addrs if routable(a)}, key=ipaddress.ip_address))


def pool(cfg: Config) -> tuple[str, ...]:
    """The outbound IP pool in force: the configured one, else the host's own addresses."""
    return cfg.outbound.ip_pool or host_addresses()


def pool_warnings(cfg: Config, ips: tuple[str, ...]) -> list[str]:
    """What an admin must know about the pool: no routable address at all, or loopback
    addresses set by hand (fine on a test bench, unreachable for the Internet)."""
    if not ips:
        return ["no routable outbound address: the host has none besides loopback and "
                "link-local, and outbound.ip_pool is empty; set outbound.ip_pool to the "
                "addresses mail may leave from (mail leaves from Postfix's default address, "
                "and SPF records cannot name it)"]
    bad = [ip for ip in ips if not routable(ip)]
    if bad:
        return [f"outbound.ip_pool has non-routable addresses ({', '.join(bad)}): mail bound "
                "to them reaches only this host"]
    return []


def transport_name(ip: str) -> str:
    """The master.cf smtp transport bound to `ip` (e.g. `mpout-127-0-0-1`)."""
    return "mpout-" + ipaddress.ip_address(ip).exploded.replace(".", "-").replace(":", "-")


def least_used(candidates: tuple[str, ...], domains_per_ip: Mapping[str, int]) -> str:
    """The pool address with the fewest domains (first in pool order on a tie)."""
    if not candidates:
        raise ValueError("the outbound IP pool is empty")
    return min(candidates, key=lambda ip: (domains_per_ip.get(ip, 0), candidates.index(ip)))
