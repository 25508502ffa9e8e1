"""Maildir work the admin API does: usage, clearing contents, removing a mailbox's files."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

_SIZE_IN_NAME = re.compile(r",S=(\d+)")


def maildir_for(root: Path, domain: str, name: str) -> Path:
    """`{root}/{domain}/{name}/Maildir` (the LMTP module's function when it exists)."""
    try:
        from ..lmtp.maildir import maildir_for as lmtp_maildir_for
    except ImportError:
        return Path(root) / domain / name / "Maildir"
    return Path(lmtp_maildir_for(root, domain, name))


def mailbox_home(root: Path, domain: str, name: str) -> Path:
    """The directory that holds everything of one mailbox (the Maildir's parent)."""
    maildir = maildir_for(root, domain, name)
    home = maildir.parent
    # never remove more than the mailbox's own directory
    if home.resolve().parent != (Path(root) / domain).resolve():
        return maildir
    return home


def _folders(maildir: Path) -> list[Path]:
    out = [maildir]
    with contextlib.suppress(OSError):
        out += [p for p in maildir.iterdir() if p.name.startswith(".") and p.name not in (
            ".", "..") and p.is_dir() and not p.is_symlink()]
    return out


def _walk_usage(maildir: Path) -> int:
    total = 0
    for folder in _folders(maildir):
        for sub in ("cur", "new"):
            with contextlib.suppress(OSError), os.scandir(folder / sub) as it:
                for entry in it:
                    m = _SIZE_IN_NAME.search(entry.name)
                    if m:
                        total += int(m.group(1))
                    else:
                        with contextlib.suppress(OSError):
                            total += entry.stat(follow_symlinks=False).st_size
    return total


def usage(maildir: Path, limit: int | None = None) -> int:
    """Bytes used by a Maildir (the quota module's `maildirsize` accounting when it exists;
    `limit` = the mailbox's max size, 0 = unlimited, kept in the file's header)."""
    if not maildir.exists():
        return 0
    try:
        from ..quota.usage import current_usage
    except ImportError:
        return _walk_usage(maildir)
    used, _count = current_usage(maildir, limit)
    return int(used)


def clear(maildir: Path) -> int:
    """Empty every folder, keep the mailbox; bytes freed (the quota module does it when it
    exists: safe against concurrent deliveries, resets `maildirsize`)."""
    if not maildir.exists():
        return 0
    try:
        from ..quota.clear import clear_contents
    except ImportError:
        clear_contents = None
    if clear_contents is not None:
        freed, _count = clear_contents(maildir)
        return int(freed)
    freed = _walk_usage(maildir)
    for folder in _folders(maildir):
        for sub in ("cur", "new", "tmp"):
            with contextlib.suppress(OSError), os.scandir(folder / sub) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        (maildir / "maildirsize").unlink()
    return freed


def set_aside(path: Path) -> Path | None:
    """Rename `path` to a hidden name beside it (atomic), so it can be put back if the store
    refuses the deletion; None when it does not exist."""
    if not path.exists():
        return None
    aside = path.with_name(f".deleted-{path.name}-{secrets.token_hex(4)}")
    path.rename(aside)
    return aside


def put_back(aside: Path | None, path: Path) -> None:
    if aside is not None:
        aside.rename(path)


def remove(aside: Path | None) -> None:
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
