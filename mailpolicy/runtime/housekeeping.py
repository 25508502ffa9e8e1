"""The daemon's periodic chores: sweeping stale Maildir tmp/ files (bounded work per run)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from mailpolicy.maildir.sweep import BATCH, DEAD_WRITER_AFTER, TmpSweeper

log = structlog.get_logger("mailpolicy.housekeeping")

SWEEP_EVERY = 3600.0  # seconds between two passes over the Maildir root
BATCH_PAUSE = 1.0  # seconds between two batches of one pass


async def sweep_tmp(root: Path, every: float = SWEEP_EVERY, pause: float = BATCH_PAUSE,
                    batch: int = BATCH) -> None:
    """Run for ever (cancel to stop): a pass over every Maildir's tmp/ at start and then every
    `every` seconds, `batch` directory entries at a time (in a thread) with `pause` seconds
    between batches, so a large root never holds a thread or the disk for long."""
    sweeper = TmpSweeper(root, batch=batch)
    removed = freed = deferred = 0
    while True:
        try:
            stats = await asyncio.to_thread(sweeper.step)
        except OSError as e:  # never fatal: the next run tries again
            log.warning("housekeeping.sweep_failed", error=repr(e))
            await asyncio.sleep(every)
            continue
        removed += stats.removed
        freed += stats.freed
        deferred += stats.deferred
        if not stats.passes_done:
            await asyncio.sleep(pause)
            continue
        if removed:
            log.info("housekeeping.tmp_swept", removed=removed, freed=freed, root=str(root))
        # files of a writer that just died (the SIGKILL before this start) go in a minute
        wait = min(every, DEAD_WRITER_AFTER + 1) if deferred else every
        removed = freed = deferred = 0
        await asyncio.sleep(wait)
