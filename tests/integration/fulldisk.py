"""A real full filesystem for tests: a small tmpfs mounted for the test (needs root)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(size: str = "1m", inodes: int = 0) -> Iterator[Path]:
    """A tmpfs of `size` (and at most `inodes` inodes), unmounted afterwards; the test is
    skipped (with the reason) when this process may not mount one."""
    d = tempfile.mkdtemp(prefix="mp-fulldisk-")
    opts = f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", d],
                         capture_output=True, text=True) if os.geteuid() == 0 else None
    if res is None or res.returncode != 0:
        os.rmdir(d)
        pytest.skip("a real full disk needs root to mount a small tmpfs: "
                    + (res.stderr.strip() if res is not None else "not root"))
    try:
        yield Path(d)
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte with one file; returns it (remove
    it to free the space)."""
    filler = directory / ".filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    return filler


def fill_inodes(directory: Path) -> int:
    """Create empty files in `directory` until the filesystem has no inode left."""
    n = 0
    while True:
        try:
            (directory / f".inode-{n}").touch()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            return n
        n += 1


def leftovers(root: Path) -> list[str]:
    """Every file under a tmp/ directory of `root` (what a failed write would leave)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.parent.name == "tmp" and p.is_file())
