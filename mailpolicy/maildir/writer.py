"""Maildir paths and the durable Maildir++ writer (tmp/ → fsync → rename into new/ → fsync dir)."""

from __future__ import annotations

import functools
import itertools
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mailpolicy.core.addresses import AddressError, normalize_domain, validate_name
from mailpolicy.maildir.usage import counting_lock

DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRS = ("cur", "new", "tmp")
JUNK = ".Junk"

_counter = itertools.count(1)
_HOST = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


class MaildirPathError(ValueError):
    """A domain, name or folder would leave the Maildir root."""


@functools.lru_cache(maxsize=8192)  # on every RCPT; pure (refusals raise and are not cached)
def maildir_for(root: Path, domain: str, name: str) -> Path:
    """`{root}/{domain}/{name}/Maildir`, refusing anything that is not a plain, normalised
    domain and mailbox name (no `..`, `/`, NUL, upper case, leading dot)."""
    try:
        if normalize_domain(domain) != domain:
            raise MaildirPathError(f"domain not in normal form: {domain!r}")
        validate_name(name, "mailbox name")
    except AddressError as e:
        raise MaildirPathError(str(e)) from None
    root = Path(root)
    path = root / domain / name / "Maildir"
    # belt and braces: the joined path must stay strictly under root
    if os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) != os.path.abspath(root):
        raise MaildirPathError(f"path escapes the Maildir root: {path}")
    return path


def folder_path(maildir: Path, folder: str = "") -> Path:
    """The directory of a Maildir++ folder: "" is INBOX, ".Junk" a sub-folder."""
    if not folder:
        return maildir
    if (not folder.startswith(".") or folder in (".", "..") or folder.startswith("..")
            or "/" in folder or "\x00" in folder):
        raise MaildirPathError(f"invalid Maildir++ folder name: {folder!r}")
    return maildir / folder


def unique_name(size: int, vsize: int) -> str:
    """A Maildir++ unique name with Dovecot's `,S=<size>,W=<vsize>` fields."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size},W={vsize}"


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir_durable(path: Path) -> None:
    """Create `path` and missing parents with DIR_MODE, fsyncing each parent we changed."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


def ensure_folder(maildir: Path, folder: str = "") -> Path:
    """Create the Maildir (and the Maildir++ folder) with tmp/new/cur if missing."""
    fdir = folder_path(maildir, folder)
    for base in ((maildir, fdir) if folder else (maildir,)):
        for sub in SUBDIRS:
            _mkdir_durable(base / sub)
    if folder:
        marker = fdir / "maildirfolder"
        if not marker.exists():
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    return fdir


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_tmp(tmp_path: Path, parts: Sequence[bytes | bytearray]) -> None:
    """Write and fsync `tmp_path`; on any failure (ENOSPC, EDQUOT, EIO, a signal) the partial
    file is removed, so a failed delivery leaves nothing behind in tmp/."""
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            views = [memoryview(p) for p in parts if len(p)]
            while views:
                n = os.writev(fd, views)
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _unlink_quietly(tmp_path)
        raise


def write_message(maildir: Path, parts: Sequence[bytes | bytearray],
                  folder: str = "", published: Callable[[], None] | None = None) -> Path:
    """Store one message durably (blocking; run it in a thread). `parts` are written one after
    the other (LF line endings expected). `published` runs right after the rename into new/,
    under the Maildir's counting lock (the maildirsize update). Returns the path in new/ once
    file and directory are on disk."""
    size = sum(len(p) for p in parts)
    vsize = size + sum(p.count(b"\n") for p in parts)
    fdir = folder_path(maildir, folder)
    name = unique_name(size, vsize)
    tmp_path = fdir / "tmp" / name
    new_path = fdir / "new" / name
    try:
        _write_tmp(tmp_path, parts)
    except FileNotFoundError:
        ensure_folder(maildir, folder)
        _write_tmp(tmp_path, parts)
    try:
        with counting_lock(maildir):
            try:
                os.rename(tmp_path, new_path)
            except FileNotFoundError:
                if not tmp_path.exists():
                    raise
                ensure_folder(maildir, folder)  # new/ vanished (e.g. a clear): recreate, retry
                os.rename(tmp_path, new_path)
            if published is not None:
                published()
        _fsync_dir(new_path.parent)
    except BaseException:
        _unlink_quietly(tmp_path)
        raise
    return new_path
