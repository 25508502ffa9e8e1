"""The socketmap tables, one function per map, all answering through resolve()."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address
from mailpolicy.core.cluster import is_remote, lmtp_nexthop
from mailpolicy.core.directory import Directory, Kind, resolve
from mailpolicy.core.model import Node
from mailpolicy.core.outbound import transport_name
from mailpolicy.core.senders import grant_lookup, owners
from mailpolicy.socketmap.protocol import NOTFOUND, Query, Reply, ok, temp

MapFn = Callable[[Directory, str], Awaitable[Reply]]


class SrsReverser(Protocol):
    """What the maps need of SRS (mailpolicy.core.srs.Srs)."""

    domain: str

    def reverse(self, address: str) -> str | None: ...


async def domains(directory: Directory, key: str) -> Reply:
    """virtual_mailbox_domains: OK for our domains. Postfix sends a bare domain name; parent
    domain probes (`.example.com`) and anything with `@` are not ours."""
    if "@" in key:
        return NOTFOUND
    try:
        name = normalize_domain(key)
    except AddressError:
        return NOTFOUND
    domain = await directory.get_domain(name)
    return ok(domain.name) if domain is not None else NOTFOUND


async def mailboxes(directory: Directory, key: str) -> Reply:
    """virtual_mailbox_maps: OK for every address Postfix should accept at RCPT (mailboxes,
    aliases, `+ext` of those, and unknowns of domains whose default action takes the mail).
    Socketmap gets full addresses only; a bare domain or `@domain` is never a mailbox."""
    if "@" not in key or key.startswith("@"):
        return NOTFOUND
    r = await resolve(directory, key)
    if not r.accepted_at_rcpt:
        return NOTFOUND
    if r.kind is Kind.MAILBOX and r.mailbox is not None:
        return ok(r.mailbox.address)
    return ok(r.address)


async def sender_transport(directory: Directory, key: str) -> Reply:
    """sender_dependent_default_transport_maps: the smtp transport bound to the outbound IP of
    the sender's domain (`mpout-…:`); NOTFOUND for the null sender and other domains."""
    try:
        _local, raw_domain = split_address(key)
        name = normalize_domain(raw_domain)
    except AddressError:
        return NOTFOUND
    domain = await directory.get_domain(name)
    if domain is None or not domain.outbound_ip:
        return NOTFOUND
    return ok(f"{transport_name(domain.outbound_ip)}:")


async def senders(directory: Directory, key: str) -> Reply:
    """smtpd_sender_login_maps: the logins that may use `key` as MAIL FROM (the mailbox owning
    the address or alias, +ext forms included, and mailboxes granted it or its domain),
    separated by commas; NOTFOUND when nobody may."""
    if "@" not in key or key.startswith("@"):
        return NOTFOUND
    logins = await owners(directory, key, grant_lookup(directory))
    return ok(", ".join(logins)) if logins else NOTFOUND


class NodeDirectory(Directory, Protocol):
    """A Directory that also knows the nodes of a cluster (the store, or its cache)."""

    async def get_node(self, name: str) -> Node | None: ...


async def transport(directory: NodeDirectory, key: str, node: str) -> Reply:
    """transport_maps (a cluster): `mailpolicy-lmtp:inet:HOST:PORT` of the home node's LMTP
    server for a mailbox (or its alias, `+ext`) at home on another node than `node`; NOTFOUND
    for everything else, so virtual_transport (this node's LMTP) applies. Postfix sends the
    whole address once (with `+ext`) and probes `*` now and then: resolve() strips the
    extension and matches the domain; `*`, bare domains and `@domain` are NOTFOUND."""
    if not node or "@" not in key or key.startswith("@"):
        return NOTFOUND
    final = (await resolve(directory, key)).final
    mailbox = final.mailbox
    if final.kind is not Kind.MAILBOX or mailbox is None or not is_remote(mailbox, node):
        return NOTFOUND
    home = await directory.get_node(mailbox.home_node)
    if home is None:  # deferred, never bounced: an admin's mistake is fixed in the store
        return temp(f"home node {mailbox.home_node} of {mailbox.address} is not registered")
    return ok(lmtp_nexthop(home))


MAPS: dict[str, MapFn] = {
    "domains": domains,
    "mailboxes": mailboxes,
    "sender-transport": sender_transport,
    "senders": senders,
}


def srs_answer(srs: SrsReverser, query: Query) -> Reply | None:
    """Bounces to our SRS addresses must be accepted: the filter sends them back to the
    original sender. The SRS domain is a mailbox domain; a valid (signed, unexpired) SRS
    address is a mailbox. None: not an SRS question, ask the directory."""
    if query.name == "domains" and query.key.rstrip(".").lower() == srs.domain:
        return ok(srs.domain)
    if query.name == "mailboxes" and srs.reverse(query.key) is not None:
        return ok(query.key)
    return None


async def lookup(directory: Directory, query: Query, srs: SrsReverser | None = None,
                 node: str = "") -> Reply:
    """Answer one query; an unknown map name is a TEMP (a config error must not bounce mail).
    `node`: this host's node of a cluster ("" = none; then `transport` finds nothing)."""
    if srs is not None and (answer := srs_answer(srs, query)) is not None:
        return answer
    if query.name == "transport":
        return await transport(directory, query.key, node)  # type: ignore[arg-type]
    fn = MAPS.get(query.name)
    if fn is None:
        return temp(f"no such map: {query.name}")
    return await fn(directory, query.key)
