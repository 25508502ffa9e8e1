"""Filter steps for mail that leaves: the From/owner check and DKIM signing of submitted mail,
and ARC sealing of copies forwarded to other domains."""

from __future__ import annotations

import asyncio
from email.utils import getaddresses
from typing import Any

import structlog

from mailpolicy.auth import dkimkeys
from mailpolicy.auth.results import HEADER as AR_HEADER
from mailpolicy.auth.signing import SigningError, dkim_sign
from mailpolicy.config import Config
from mailpolicy.core.addresses import AddressError, normalize_domain, split_address
from mailpolicy.core.directory import Directory
from mailpolicy.core.replies import Reply
from mailpolicy.core.senders import grant_lookup, owners
from mailpolicy.smtp.pipeline import Step, Transaction

log = structlog.get_logger("mailpolicy.filter")

SIGN_IN_THREAD = 256 * 1024  # bytes: larger messages are hashed off the event loop


def from_addresses(tx: Transaction) -> list[str]:
    """The addresses of the From header field(s)."""
    return [addr for _name, addr in getaddresses(tx.header_values("from")) if addr]


def _domain_of(address: str) -> str | None:
    try:
        return normalize_domain(split_address(address)[1])
    except AddressError:
        return None


class FromOwnerStep:
    """Submitted mail: the From header must name an address the envelope sender's owner may
    use (Postfix's reject_sender_login_mismatch checked MAIL FROM against the login)."""

    name = "from-owner"

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.grants = grant_lookup(directory)

    async def __call__(self, tx: Transaction) -> Reply | None:
        if not tx.mail_from:
            return Reply(553, "5.7.1", "Submitted mail needs a sender address")
        froms = from_addresses(tx)
        if len(froms) != 1:
            return Reply(553, "5.7.1", "Submitted mail needs exactly one From address")
        author = froms[0]
        if author.lower() == tx.mail_from.lower():
            return None
        senders = set(await owners(self.directory, tx.mail_from, self.grants))
        if senders and senders & set(await owners(self.directory, author, self.grants)):
            return None
        log.warning("filter.from_not_owned", id=tx.id, sender=tx.mail_from, author=author)
        return Reply(553, "5.7.1", f"From address <{author}> is not owned by the sender "
                                   f"<{tx.mail_from}>")


class DkimSignStep:
    """Submitted mail from one of our domains: DKIM-signed with the From domain's key(s), as
    the message leaves (the last step before reinjection). A message that cannot be signed
    leaves unsigned (logged): signing never loses mail."""

    name = "dkim-sign"

    def __init__(self, store: Any) -> None:
        self.store = store

    async def __call__(self, tx: Transaction) -> Reply | None:
        froms = from_addresses(tx)
        domain = _domain_of(froms[0]) if len(froms) == 1 else None
        if domain is None:
            return None
        keys = await dkimkeys.signing_keys(self.store, domain)
        if not keys:
            return None
        message = tx.message_bytes()
        try:
            if len(message) > SIGN_IN_THREAD:
                header = await asyncio.to_thread(dkim_sign, message, keys)
            else:
                header = dkim_sign(message, keys)
        except SigningError as e:
            log.warning("filter.dkim_unsigned", id=tx.id, queue_id=tx.queue_id, domain=domain,
                        error=str(e))
            return None
        tx.prepend.insert(0, header)
        tx.notes["dkim_signed"] = [k.selector for k in keys]
        return None


class ArcSealStep:
    """A received message forwarded to another domain (copies, do-not-save, redirects) gets an
    ARC set (RFC 8617) signed with the forwarding domain's key: our Authentication-Results
    and the chain verdict, so receivers can trust our DMARC result after SRS broke SPF."""

    name = "arc-seal"

    def __init__(self, cfg: Config, store: Any, resolver: Any) -> None:
        self.store = store
        self.resolver = resolver
        self.srv_id = cfg.dmarc.authserv_id or cfg.hostname

    async def _forwarder(self, tx: Transaction) -> str | None:
        for rcpt in tx.original_rcpts:
            domain = _domain_of(rcpt)
            if domain and await self.store.dkim.list(domain):
                return domain
        return None

    def _auth_results(self, tx: Transaction) -> str:
        prefix = f"{AR_HEADER}:".lower().encode()
        for raw in tx.prepend:
            if raw.lower().startswith(prefix):
                value = raw.split(b":", 1)[1].replace(b"\r\n", b"").decode("ascii", "replace")
                _srv, _, resinfo = value.partition(";")
                return " ".join(resinfo.split())
        return ""

    async def __call__(self, tx: Transaction) -> Reply | None:
        if not tx.notes.get("forwarded_external"):
            return None
        domain = await self._forwarder(tx)
        if domain is None:
            return None
        message = tx.message_bytes()
        try:
            chain = await dkimkeys.arc_chain(bytes(tx.content), self.resolver)
            arc_set = await dkimkeys.arc_seal(self.store, message, domain, self.srv_id,
                                              self._auth_results(tx), chain)
        except SigningError as e:
            log.warning("filter.arc_unsealed", id=tx.id, queue_id=tx.queue_id, domain=domain,
                        error=str(e))
            return None
        if arc_set:
            tx.prepend.insert(0, arc_set)
            tx.notes["arc_sealed"] = domain
        return None


def originating_steps(cfg: Config, directory: Directory, store: Any) -> list[Step]:
    """The steps run on submitted mail before the recipient rewrite."""
    return [FromOwnerStep(directory)]


def signing_steps(cfg: Config, store: Any, resolver: Any, originating: bool) -> list[Step]:
    """The last steps before reinjection: DKIM for submitted mail, ARC for forwarded copies."""
    if not hasattr(store, "dkim"):
        return []
    return [DkimSignStep(store)] if originating else [ArcSealStep(cfg, store, resolver)]
