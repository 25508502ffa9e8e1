"""A cluster's home node keeps each mailbox's usage figure in the store current after every
delivery, for the RCPT-time quota checks of the other nodes (this LMTP stays the authority)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from mailpolicy.config import Config
from mailpolicy.core.replies import Reply
from mailpolicy.lmtp.deliver import Target
from mailpolicy.maildir.usage import current_usage

log = structlog.get_logger("mailpolicy.lmtp")

RunIO = Callable[..., Awaitable[Any]]


async def report_usage(cfg: Config, store: Any, run_io: RunIO, targets: Sequence[Target],
                       results: Sequence[Reply]) -> None:
    """For each distinct mailbox stored into (a 250): its bytes now, into the store. Only on
    a node of a cluster (a single host reads its Maildirs). Never raises: a figure that is
    not written is only a less exact pre-check elsewhere."""
    if not cfg.cluster.node:
        return
    done: set[object] = set()
    for t, r in zip(targets, results, strict=True):
        if not r.ok or t.mailbox is None or t.maildir is None or t.key in done:
            continue
        done.add(t.key)
        try:
            used, _count = await run_io(current_usage, t.maildir, t.mailbox.max_size)
            await store.nodes.set_usage(t.mailbox.id, int(used))
        except Exception as e:
            log.warning("lmtp.usage_report_failed", mailbox=t.mailbox.address, error=repr(e))
