"""What the autoresponder needs of the store: the settings per mailbox and race-safe claims."""

from __future__ import annotations

from typing import Protocol

from mailpolicy.core.directory import StoreDirectory
from mailpolicy.core.model import Autoresponder


class ReplyLedger(Protocol):
    """Autoresponder settings and the once-per-interval reply claims (the store's
    `autoreplies`)."""

    async def get(self, mailbox_id: int) -> Autoresponder | None: ...

    async def active(self, domain: str | None = None) -> set[int]:
        """Ids of mailboxes whose autoresponder is enabled and has a message."""
        ...

    async def claim(self, mailbox_id: int, sender: str, response_key: str, now: float,
                    interval: float) -> bool:
        """Claim the right to answer `sender` now: False when already answered within
        `interval` seconds."""
        ...

    async def release(self, mailbox_id: int, sender: str, response_key: str) -> None:
        """Undo a claim whose reply could not be sent."""
        ...


class AutoreplyStore(Protocol):
    """A store with autoresponder state."""

    @property
    def autoreplies(self) -> ReplyLedger: ...


class MailStore(StoreDirectory, AutoreplyStore, Protocol):
    """The store as the services that take mail in (the filter, LMTP) see it: the directory
    with its change signals, and the autoresponder state."""
