"""Outbound IP pool: the configured or the host's own addresses, their transport names, and
the route of mail mailpolicy sends itself (routed reinjection listeners)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mailpolicy.config import Config, ConfigError, split_hostport


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


def _canonical(ip: str) -> str:
    return ipaddress.ip_address(ip).compressed


def _fixed_ports(cfg: Config) -> dict[int, str]:
    """Ports of mailpolicy's and its Postfix services' own listeners, by config key."""
    out: dict[int, str] = {cfg.reinject.port: "reinject.port"}
    values = [(getattr(cfg.listen, k), f"listen.{k}") for k in
              ("policy", "socketmap", "filter", "lmtp", "filter_originating")]
    values += [(getattr(cfg.submission, k), f"submission.{k}") for k in
               ("submission", "submissions")]
    for value, key in values:
        if value and ":" in value:
            out[split_hostport(value, key)[1]] = key
    return out


def routed_ports(cfg: Config, ips: Iterable[str]) -> dict[str, int]:
    """The routed reinjection listener of each pool address (canonical form -> port): the
    pool sorted by address (IPv4 first), the i-th at reinject.routed_port_base + i; none
    when the base is 0. Raises ConfigError when a port is out of range or another
    listener's."""
    base = cfg.reinject.routed_port_base
    if not base:
        return {}
    ordered = sorted({_canonical(ip) for ip in ips},
                     key=lambda ip: (ipaddress.ip_address(ip).version, ipaddress.ip_address(ip)))
    out = {ip: base + i for i, ip in enumerate(ordered)}
    taken = _fixed_ports(cfg)
    for ip, port in out.items():
        if port > 65535:
            raise ConfigError(f"reinject.routed_port_base: {base} + {len(ordered)} pool "
                              "addresses passes port 65535")
        if port in taken:
            raise ConfigError(f"reinject.routed_port_base: the routed listener of {ip} "
                              f"({port}) is {taken[port]}'s port")
    return out


@dataclass(frozen=True, slots=True)
class Reinjection:
    """Where mailpolicy hands a recipient back to Postfix: the plain reinjection port, or
    the routed listener of `outbound_ip`. `fallback` says why a forwarded copy or a reply
    takes the plain path (then it leaves from Postfix's default address)."""

    port: int
    outbound_ip: str = ""
    fallback: str = ""


def reinjection(plain_port: int, routed: Mapping[str, int], outbound_ip: str,
                external: bool) -> Reinjection:
    """THE route rule for mail mailpolicy sends itself (forwarded copies, redirects,
    autoreplies): a recipient outside our domains goes through the routed listener of the
    responsible domain's outbound IP, so it leaves from that address like the domain's user
    mail; local recipients, and domains without an address routed on this host, take the
    plain reinjection."""
    if not external:
        return Reinjection(plain_port)
    if not outbound_ip:
        return Reinjection(plain_port, fallback="the domain has no outbound IP")
    try:
        port = routed.get(_canonical(outbound_ip))
    except ValueError:
        port = None
    if port is None:
        return Reinjection(plain_port, fallback=f"no routed reinjection listener for "
                                                f"{outbound_ip} (not in this host's pool)")
    return Reinjection(port, outbound_ip)
