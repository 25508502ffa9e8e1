"""Removal of stale files in Maildir `tmp/` directories (left by a crash or a killed process).

Maildir convention (qmail's maildir(5), Dovecot): a file in tmp/ not touched for 36 hours is
garbage. Our writer removes its own partial files on every failure it sees; this sweep covers
what a SIGKILL or a power cut leaves. Sooner than that, a file is garbage when its name says
which process of this host writes it (`<sec>.M<usec>P<pid>Q<n>.<host>`, as we and Dovecot name
them; `<sec>.<pid>Q<n>_NeWmAiLdIrSiZe.<host>` for a maildirsize being rewritten) and that
process is gone: a Maildir writer only ever renames its own tmp/ files. (Were the pid reused,
the file waits for the 36 hours.) Work is bounded per call: a `TmpSweeper` walks every
`{root}/{domain}/{name}/Maildir[/.Folder]/tmp` a batch at a time and resumes where it stopped.
Blocking: call step() with asyncio.to_thread.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STALE_AFTER = 36 * 3600  # seconds; the Maildir convention
DEAD_WRITER_AFTER = 60  # seconds a file of a process that is gone is left alone (clock skew)
BATCH = 5000  # directory entries looked at per step
_WRITER = re.compile(r"^\d+\.(?:M\d+P(\d+)|(\d+))Q\d+(?:_NeWmAiLdIrSiZe)?\.([^,:]+)")


def _host() -> str:
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


def writer_gone(name: str, host: str) -> bool:
    """Whether `name` is a tmp/ file of a process of `host` that no longer runs."""
    m = _WRITER.match(name)
    if m is None or m.group(3) != host:
        return False
    pid = int(m.group(1) or m.group(2))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive (another user's), or we cannot tell
    return False


@dataclass
class SweepStats:
    """What one step (or a whole pass) did."""

    looked_at: int = 0
    removed: int = 0
    freed: int = 0
    passes_done: int = 0  # whole walks over the root finished during the step
    deferred: int = 0  # files of a writer that is gone, left for being too recent


def _entries(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _tmp_dirs(root: Path) -> Iterator[str | None]:
    """Every tmp/ directory under `root`; yields None after each directory entry looked at
    (the unit of work the budget counts)."""
    for dom in _entries(str(root)):
        yield None
        if dom.name.startswith(".") or not dom.is_dir(follow_symlinks=False):
            continue
        for box in _entries(dom.path):
            yield None
            if box.name.startswith(".") or not box.is_dir(follow_symlinks=False):
                continue
            maildir = os.path.join(box.path, "Maildir")
            yield os.path.join(maildir, "tmp")
            for sub in _entries(maildir):
                yield None
                n = sub.name
                if (n.startswith(".") and n not in (".", "..") and not n.startswith("..")
                        and sub.is_dir(follow_symlinks=False)):
                    yield os.path.join(sub.path, "tmp")


class TmpSweeper:
    """Removes tmp/ files older than `stale_after` seconds under a Maildir root, `batch`
    directory entries per step(), resuming where the previous step stopped."""

    def __init__(self, root: Path, stale_after: float = STALE_AFTER, batch: int = BATCH) -> None:
        self.root = Path(root)
        self.stale_after = stale_after
        self.batch = max(1, batch)
        self._walk: Iterator[None] | None = None
        self._stats = SweepStats()  # the step in progress (a walk spans several steps)

    def _pass(self) -> Iterator[None]:
        now = time.time()
        cutoff, dead_cutoff, host = now - self.stale_after, now - DEAD_WRITER_AFTER, _host()
        for tmp in _tmp_dirs(self.root):
            if tmp is None:
                yield None
            else:
                yield from self._sweep_dir(tmp, cutoff, dead_cutoff, host)

    def _sweep_dir(self, tmp: str, cutoff: float, dead_cutoff: float, host: str,
                   ) -> Iterator[None]:
        for e in _entries(tmp):
            yield None
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not e.is_file(follow_symlinks=False):
                continue
            if st.st_mtime >= cutoff:
                if not writer_gone(e.name, host):
                    continue
                if st.st_mtime >= dead_cutoff:
                    self._stats.deferred += 1
                    continue
            try:
                os.unlink(e.path)
            except OSError:
                continue  # gone already, or not ours to remove: the next pass looks again
            self._stats.removed += 1
            self._stats.freed += st.st_size

    def step(self) -> SweepStats:
        """Look at up to `batch` entries; returns what this step did. A step that finishes a
        pass over the root stops there (the next step starts a new pass)."""
        stats = self._stats = SweepStats()
        if self._walk is None:
            self._walk = self._pass()
        for _ in range(self.batch):
            try:
                next(self._walk)
            except StopIteration:
                self._walk = None
                stats.passes_done = 1
                break
            stats.looked_at += 1
        return stats

    def sweep_all(self) -> SweepStats:
        """Finish the current pass (or make a whole one), however long it takes."""
        total = SweepStats()
        while not total.passes_done:
            s = self.step()
            total.looked_at += s.looked_at
            total.removed += s.removed
            total.freed += s.freed
            total.deferred += s.deferred
            total.passes_done = s.passes_done
        return total
