"""Usage for the quota rule on a node of a cluster: the Maildir when the mailbox lives here,
else the figure its home node keeps in the store (reused for REMOTE_TTL seconds)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from mailpolicy.core.cluster import is_remote
from mailpolicy.core.model import Mailbox
from mailpolicy.maildir.reader import UsageReader

REMOTE_TTL = 1.0  # seconds a home node's figure is reused (its LMTP enforces the quota anyway)
MAX_ENTRIES = 100_000


class HomeUsage:
    """A UsageFn (with `known`, the no-I/O peek) that asks the store for mailboxes at home on
    another node: the home node's LMTP server stays the authority, so a stale figure costs at
    most a message over quota there (or a 4xx/5xx at RCPT a second late), never a bounce."""

    def __init__(self, local: UsageReader, remote: Callable[[int], Awaitable[int]], node: str,
                 ttl: float = REMOTE_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.local = local
        self.remote = remote
        self.node = node
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[int, tuple[float, int]] = {}

    def known(self, mailbox: Mailbox) -> int | None:
        if not is_remote(mailbox, self.node):
            return self.local.known(mailbox)
        hit = self._cache.get(mailbox.id)
        return hit[1] if hit is not None and hit[0] > self.clock() else None

    async def __call__(self, mailbox: Mailbox) -> int:
        if not is_remote(mailbox, self.node):
            return await self.local(mailbox)
        used = self.known(mailbox)
        if used is None:
            used = await self.remote(mailbox.id)
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[mailbox.id] = (self.clock() + self.ttl, used)
        return used
