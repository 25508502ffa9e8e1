"""Empty every folder of a Maildir while deliveries go on, then reset `maildirsize`.

Each folder's new/ and cur/ is swapped atomically with a fresh empty directory
(renameat2 RENAME_EXCHANGE), so a message renamed into new/ after the swap lands in the new,
kept directory and nothing delivered during the clear is lost; the swapped-out directory is
then emptied and removed. Without RENAME_EXCHANGE (old kernel, odd filesystem) the files
listed at the start are removed one by one. Blocking: call with asyncio.to_thread.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import shutil
from pathlib import Path

from mailpolicy.maildir.usage import folders, reset, size_from_name

HOLD_MARK = ".clear-"
DIR_MODE = 0o700
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_counter = itertools.count(1)

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = getattr(_libc, "renameat2", None)
except OSError:  # pragma: no cover
    _renameat2 = None


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when the system cannot (then nothing changed)."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_files(directory: Path, names: list[str] | None = None) -> tuple[int, int]:
    """Unlink the given (or all) files of a directory; returns (bytes, count) removed."""
    total = count = 0
    if names is None:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return 0, 0
    for name in names:
        path = directory / name
        size = size_from_name(name)
        try:
            if size is None:
                size = os.lstat(path).st_size
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue
        total += size
        count += 1
    return total, count


def _clear_dir(folder: Path, sub: str) -> tuple[int, int]:
    target = folder / sub
    if not target.is_dir():
        return 0, 0
    hold = folder / f"{sub}{HOLD_MARK}{os.getpid()}-{next(_counter)}"
    try:
        os.mkdir(hold, DIR_MODE)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk (no inode or block for the holding directory): remove the files one
        # by one, which frees space rather than needing it
        return _remove_files(target, os.listdir(target))
    try:
        swapped = exchange(hold, target)
    except BaseException:
        os.rmdir(hold)
        raise
    if not swapped:
        os.rmdir(hold)
        return _remove_files(target, os.listdir(target))
    _fsync_dir(folder)  # the swap is durable before we delete anything
    total = count = 0
    for _ in range(100):
        b, c = _remove_files(hold)
        total += b
        count += c
        try:
            os.rmdir(hold)
            break
        except FileNotFoundError:  # a concurrent clear's _leftovers() removed it for us
            break
        except OSError as e:
            # a rename that resolved the old new/ just before the swap may still land there:
            # it happened before the clear, so it is cleared too
            if e.errno != errno.ENOTEMPTY:
                raise
    else:
        shutil.rmtree(hold, ignore_errors=True)
    return total, count


def _leftovers(folder: Path) -> None:
    """Finish the removal of holding directories left by an interrupted clear."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if HOLD_MARK in name and name.split(HOLD_MARK, 1)[0] in ("new", "cur"):
            shutil.rmtree(folder / name, ignore_errors=True)


def clear_contents(maildir: Path) -> tuple[int, int]:
    """Remove every message of every folder (folders themselves are kept) and recalculate
    `maildirsize`. Returns (bytes, count) removed. A missing Maildir is already empty."""
    maildir = Path(maildir)
    if not maildir.is_dir():
        return 0, 0
    total = count = 0
    for folder in folders(maildir):
        _leftovers(folder)
        for sub in ("new", "cur"):
            b, c = _clear_dir(folder, sub)
            total += b
            count += c
    reset(maildir)
    return total, count
