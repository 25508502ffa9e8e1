"""The usage reader the policy service caches: bytes stored per mailbox from `maildirsize`."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from mailpolicy.core.model import Mailbox
from mailpolicy.maildir.usage import MAILDIRSIZE, current_usage
from mailpolicy.maildir.writer import maildir_for

USAGE_MAX_AGE = 60.0  # seconds an unchanged maildirsize is trusted (its own stale rule: 15 min)
NO_MAILDIR = (-1, -1, -1)  # the cache stamp of a mailbox that has no Maildir yet
RESTAT_AFTER = 0.5  # seconds a usage answer is reused without even a stat (LMTP enforces too)



class UsageReader:
    """Bytes stored in a mailbox, from its Maildir++ `maildirsize` (the LMTP side keeps it up to
    date). The answer is reused while the file's inode, size and mtime stay the same (a stat
    on the event loop) for at most `max_age`; reading it, or a rescan when a Maildir has no
    such file, runs in a thread."""

    def __init__(self, maildir_root: Path, max_age: float = USAGE_MAX_AGE) -> None:
        self.root = maildir_root
        self.max_age = max_age
        self._cache: dict[str, tuple[tuple[int, int, int] | None, float, int]] = {}

    @staticmethod
    def _stamp(maildir: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(maildir / MAILDIRSIZE)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    @staticmethod
    def _is_dir(path: Path) -> bool:
        return os.path.isdir(path)

    def known(self, mailbox: Mailbox) -> int | None:
        """The usage when it is known without reading or scanning anything (a stat at most);
        None when a read or a rescan is needed."""
        now = time.monotonic()
        hit = self._cache.get(mailbox.address)
        if hit is not None and now < hit[1] - self.max_age + RESTAT_AFTER:
            return hit[2]  # looked at less than RESTAT_AFTER ago: no stat at all
        maildir = maildir_for(self.root, mailbox.domain, mailbox.name)
        stamp = self._stamp(maildir)
        if stamp is None and not self._is_dir(maildir):
            # never delivered to: nothing stored. Remembered under its own marker, so that a
            # Maildir that appears later (even before it has a maildirsize) is read, not 0.
            self._cache[mailbox.address] = (NO_MAILDIR, now + self.max_age, 0)
            return 0
        if hit is not None and hit[0] == stamp and now < hit[1]:
            self._cache[mailbox.address] = (stamp, now + self.max_age, hit[2])
            return hit[2]
        return None

    async def __call__(self, mailbox: Mailbox) -> int:
        known = self.known(mailbox)
        if known is not None:
            return known
        now = time.monotonic()
        maildir = maildir_for(self.root, mailbox.domain, mailbox.name)
        used, _count = await asyncio.to_thread(current_usage, maildir)
        if len(self._cache) > 100_000:
            self._cache.clear()
        stamp = self._stamp(maildir)  # a rescan may have written the file
        self._cache[mailbox.address] = (stamp, now + self.max_age, used)
        return used
