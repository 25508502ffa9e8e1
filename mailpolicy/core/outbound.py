"""Outbound IP pool: the configured or the host's own addresses, and their transport names."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping

from mailpolicy.config import Config


def host_addresses() -> tuple[str, ...]:
    """The host's own IPv4 addresses (127.0.0.1 when it has no other)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    public = sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)
    return tuple(public) or ("127.0.0.1",)


def pool(cfg: Config) -> tuple[str, ...]:
    """The outbound IP pool in force."""
    return cfg.outbound.ip_pool or host_addresses()


def transport_name(ip: str) -> str:
    """The master.cf smtp transport bound to `ip` (e.g. `mpout-127-0-0-1`)."""
    return "mpout-" + ipaddress.ip_address(ip).exploded.replace(".", "-").replace(":", "-")


def least_used(candidates: tuple[str, ...], domains_per_ip: Mapping[str, int]) -> str:
    """The pool address with the fewest domains (first in pool order on a tie)."""
    if not candidates:
        raise ValueError("the outbound IP pool is empty")
    return min(candidates, key=lambda ip: (domains_per_ip.get(ip, 0), candidates.index(ip)))
