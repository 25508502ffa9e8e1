"""The per-mailbox delivery lock: quota check and write happen under it, one at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from mailpolicy.maildir.writer import ensure_folder

DELIVERY_LOCK = "mailpolicy-delivery.lock"


@contextlib.contextmanager
def delivery_lock(maildir: Path) -> Iterator[None]:
    """Hold the Maildir's delivery lock (blocking; run in a thread). An flock on a file in
    the Maildir, so it serialises deliveries of every thread and every LMTP worker process:
    two messages can no longer both pass the quota check before either is counted. Taken
    before the counting lock (maildir.usage.counting_lock), never inside it."""
    path = Path(maildir) / DELIVERY_LOCK
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        ensure_folder(Path(maildir))
        fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
