"""Whole-mailbox work for the admin API: where a mailbox lives, its usage, clearing it,
and removing its files so that a refused deletion can put them back."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from mailpolicy.maildir.clear import clear_contents
from mailpolicy.maildir.usage import current_usage
from mailpolicy.maildir.writer import maildir_for

__all__ = ["clear", "mailbox_home", "maildir_for", "put_back", "remove", "set_aside", "usage"]


def mailbox_home(root: Path, domain: str, name: str) -> Path:
    """The directory that holds everything of one mailbox (the Maildir's parent)."""
    maildir = Path(maildir_for(root, domain, name))
    home = maildir.parent
    # never remove more than the mailbox's own directory
    if home.resolve().parent != (Path(root) / domain).resolve():
        return maildir
    return home


def usage(maildir: Path, limit: int | None = None) -> int:
    """Bytes used by a Maildir (from `maildirsize`; `limit` = the mailbox's max size, 0 =
    unlimited, kept in the file's header)."""
    if not maildir.exists():
        return 0
    used, _count = current_usage(maildir, limit)
    return int(used)


def clear(maildir: Path) -> int:
    """Empty every folder, keep the mailbox; bytes freed (safe against concurrent
    deliveries, resets `maildirsize`)."""
    if not maildir.exists():
        return 0
    freed, _count = clear_contents(maildir)
    return int(freed)


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
