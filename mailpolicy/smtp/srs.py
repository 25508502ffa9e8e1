"""The two SRS filter steps: forwarded copies get an SRS sender; bounces to SRS go back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from mailpolicy.core.addresses import AddressError, normalize_domain, split_address
from mailpolicy.core.replies import Reply
from mailpolicy.core.srs import Srs

if TYPE_CHECKING:
    from mailpolicy.core.directory import Directory
    from mailpolicy.smtp.pipeline import Transaction

log = structlog.get_logger("mailpolicy.filter")


class SrsReverseStep:
    """Recipients that are our SRS addresses (bounces of forwarded mail) go back to the
    original sender; forged or expired ones are removed and logged."""

    name = "srs-reverse"

    def __init__(self, srs: Srs) -> None:
        self.srs = srs

    async def __call__(self, tx: Transaction) -> Reply | None:
        out: list[str] = []
        for rcpt in tx.rcpt_tos:
            if not self.srs.is_ours(rcpt):
                out.append(rcpt)
                continue
            original = self.srs.reverse(rcpt)
            if original is None:
                log.warning("srs.invalid_recipient_removed", id=tx.id, queue_id=tx.queue_id,
                            rcpt=rcpt)
                continue
            log.info("srs.reversed", id=tx.id, queue_id=tx.queue_id, rcpt=rcpt, to=original)
            if original not in out:
                out.append(original)
        tx.rcpt_tos = out
        return None


class SrsStep:
    """Envelope sender of copies forwarded to external domains → SRS address in our domain,
    so SPF passes at the receiver. Null senders and senders of our own domains are kept."""

    name = "srs"

    def __init__(self, srs: Srs, directory: Directory) -> None:
        self.srs = srs
        self.directory = directory

    async def __call__(self, tx: Transaction) -> Reply | None:
        external = set(tx.notes.get("forwarded_external", ()))
        targets = [r for r in tx.rcpt_tos if r in external]
        if not targets or not tx.mail_from:
            return None
        try:
            _, sender_domain = split_address(tx.mail_from)
            if await self.directory.get_domain(normalize_domain(sender_domain)) is not None:
                return None  # our own domain: SPF passes from our addresses as it is
        except AddressError:
            pass
        new = self.srs.forward(tx.mail_from)
        if new is None:
            log.warning("srs.cannot_rewrite", id=tx.id, queue_id=tx.queue_id,
                        sender=tx.mail_from)
            return None
        for r in targets:
            tx.senders[r] = new
        log.info("srs.rewritten", id=tx.id, queue_id=tx.queue_id, sender=tx.mail_from,
                 srs=new, rcpts=",".join(targets))
        return None
