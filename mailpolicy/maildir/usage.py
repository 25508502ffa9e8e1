"""Maildir++ quota usage: the `maildirsize` file (read, append, rescan) as Courier and Dovecot do.

Format (Courier README.maildirquota, Dovecot quota=maildir): the first line holds the limits,
`<bytes>S[,<count>C]` (`0S` = no limit), every further line a `<bytes> <count>` delta. The file
is recalculated from the folders (INBOX and every `.Folder`, their new/ and cur/, sizes from
`,S=` in the file name or stat) when it is missing, broken, 5120 bytes or larger, when the
known limit differs from the header, or when it says "over quota" but has more than one delta
line or is older than 15 minutes. All functions here block: call them with asyncio.to_thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("mailpolicy.maildir")

MAILDIRSIZE = "maildirsize"
MAX_FILE_SIZE = 5120
STALE_SECONDS = 15 * 60
FILE_MODE = 0o600

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Maildir++ limits; 0 means unlimited."""

    bytes: int = 0
    count: int = 0

    def header(self) -> str:
        parts = []
        if self.bytes or not self.count:  # Dovecot writes "0S" rather than an empty line
            parts.append(f"{self.bytes}S")
        if self.count:
            parts.append(f"{self.count}C")
        return ",".join(parts)

    def exceeded_by(self, used_bytes: int, used_count: int) -> bool:
        return bool((self.bytes and used_bytes > self.bytes)
                    or (self.count and used_count > self.count))


def parse_limits(line: str) -> Limits | None:
    """`10000000S,1000C` -> Limits; None when the line is not a valid limits line."""
    b = c = 0
    for item in line.split(","):
        item = item.strip()
        if len(item) < 2 or not item[:-1].isdigit():
            return None
        value, kind = int(item[:-1]), item[-1]
        if kind == "S":
            b = value
        elif kind == "C":
            c = value
        else:
            return None
    return Limits(b, c)


def folders(maildir: Path) -> list[Path]:
    """INBOX (the Maildir itself) and every Maildir++ sub-folder (`.Name` directories)."""
    result = [maildir]
    try:
        with os.scandir(maildir) as it:
            for e in it:
                n = e.name
                if n.startswith(".") and n not in (".", "..") and not n.startswith(".."):
                    if e.is_dir(follow_symlinks=False):
                        result.append(Path(e.path))
    except FileNotFoundError:
        pass
    return sorted(result)


def size_from_name(name: str) -> int | None:
    """The `,S=<size>` of a Maildir++ file name, None when absent or malformed."""
    i = name.find(",S=")
    if i < 0:
        return None
    j = i + 3
    k = j
    while k < len(name) and name[k].isdigit():
        k += 1
    if k == j or (k < len(name) and name[k] not in ":,"):
        return None
    return int(name[j:k])


def sum_dir(directory: Path) -> tuple[int, int]:
    """Bytes and count of the messages in one new/ or cur/ directory (as Dovecot sums them)."""
    total = count = 0
    try:
        it = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    with it:
        for e in it:
            n = e.name
            if n.startswith(".") and (n == "." or n.startswith("..")):
                continue
            size = size_from_name(n)
            if size is None:
                try:
                    size = e.stat(follow_symlinks=True).st_size
                except FileNotFoundError:
                    continue
            total += size
            count += 1
    return total, count


def _mtimes(dirs: list[Path]) -> list[int]:
    out = []
    for d in dirs:
        try:
            out.append(os.stat(d).st_mtime_ns)
        except OSError:
            out.append(-1)
    return out


def rescan(maildir: Path, limits: Limits) -> tuple[int, int]:
    """Recount every folder and, unless a folder changed meanwhile, replace `maildirsize`
    atomically with a header and one summary line. Returns (bytes, count)."""
    total, count, _written = _rescan(Path(maildir), limits)
    return total, count


LOCK_FILE = "mailpolicy-quota.lock"


@contextlib.contextmanager
def counting_lock(maildir: Path, create: bool = True) -> Iterator[None]:
    """Our deliveries hold this Maildir lock from the rename into new/ to the maildirsize
    append, and our rescans while they count and write: a rescan can then never count a
    message whose delta line is still to come (it would be counted twice). Rescans do not
    create the lock file (a read leaves no trace): while a delivery is in that window the
    file exists. No lock when the Maildir (or, for a rescan, the file) does not exist."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(Path(maildir) / LOCK_FILE, flags, 0o600)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rescan(maildir: Path, limits: Limits) -> tuple[int, int, bool]:
    with counting_lock(maildir, create=False):
        return _rescan_locked(maildir, limits)


def _rescan_locked(maildir: Path, limits: Limits) -> tuple[int, int, bool]:
    dirs = [f / sub for f in folders(maildir) for sub in ("new", "cur")]
    before = _mtimes(dirs)
    total = count = 0
    for d in dirs:
        b, c = sum_dir(d)
        total += b
        count += c
    if _mtimes(dirs) == before and maildir.is_dir():
        try:
            _write_file(maildir, f"{limits.header()}\n{total} {count}\n")
        except OSError as e:
            # a full disk (or a read-only one) must not make the figure unknowable: reading
            # never depends on writing. The next reader recalculates again.
            log.warning("maildirsize.write_failed", maildir=str(maildir), error=repr(e))
            return total, count, False
        return total, count, True
    return total, count, False


def _write_file(maildir: Path, text: str) -> None:
    """Replace `maildirsize` atomically (a temporary file renamed over it); the temporary file
    is removed on every failure."""
    tmpdir = maildir / "tmp"
    if not tmpdir.is_dir():
        tmpdir = maildir
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    tmp = tmpdir / f"{int(time.time())}.{os.getpid()}Q{next(_counter)}_NeWmAiLdIrSiZe.{host}"
    data = text.encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write", str(tmp))
        finally:
            os.close(fd)
        os.rename(tmp, maildir / MAILDIRSIZE)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read(maildir: Path) -> tuple[bytes, float] | None:
    try:
        fd = os.open(maildir / MAILDIRSIZE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, MAX_FILE_SIZE + 1)
        mtime = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    return data, mtime


def read_limits(maildir: Path) -> Limits | None:
    """The limits in the header of `maildirsize`, None when missing or unreadable."""
    got = _read(Path(maildir))
    if got is None:
        return None
    first = got[0].split(b"\n", 1)[0].decode("ascii", "replace")
    return parse_limits(first)


# maildir → (bytes of maildirsize already summed, bytes, count, delta lines): the file only
# grows by appends between recalculations, so each read sums just the lines added since.
# A file that does not start with the remembered bytes is summed from the start again.
_SUMS: dict[str, tuple[bytes, int, int, int]] = {}
_SUMS_MAX = 1024


def _sum_lines(data: bytes, start: int, end: int) -> tuple[int, int, int] | None:
    """(bytes, count, lines) of the `<bytes> <count>` lines in data[start:end] (each ending
    with LF); None when one is malformed."""
    total = count = n = 0
    if start >= end:
        return 0, 0, 0
    for line in data[start:end - 1].split(b"\n"):
        fields = line.split()
        if len(fields) != 2:
            return None
        try:
            total += int(fields[0])
            count += int(fields[1])
        except ValueError:
            return None
        n += 1
    return total, count, n


def _parse(data: bytes, mtime: float, limit: int | None, key: str = "",
           ) -> tuple[Limits | None, tuple[int, int] | None]:
    """(header limits, totals) where totals is None when the file must be recalculated.
    `key` (the Maildir) lets a later call reuse the sums of an unchanged prefix."""
    if len(data) >= MAX_FILE_SIZE or b"\x00" in data:
        return None, None
    end = data.rfind(b"\n")  # ignore an unterminated last line (an append in progress)
    if end < 0:
        return None, None
    first = data.find(b"\n")
    header = parse_limits(data[:first].decode("ascii", "replace"))
    if header is None:
        return None, None
    if limit is not None and header != Limits(limit, 0):
        return header, None
    upto = end + 1
    cached = _SUMS.get(key) if key else None
    if cached is not None and first < len(cached[0]) <= upto and data.startswith(cached[0]):
        start, base = len(cached[0]), cached[1:]
    else:
        start, base = first + 1, (0, 0, 0)
    sums = _sum_lines(data, start, upto)
    if sums is None:
        return header, None
    total, count, n = base[0] + sums[0], base[1] + sums[1], base[2] + sums[2]
    if key:
        if len(_SUMS) >= _SUMS_MAX:
            _SUMS.clear()
        _SUMS[key] = (bytes(data[:upto]), total, count, n)
    if total < 0 or count < 0 or n < 1:
        return header, None
    if header.exceeded_by(total, count) and (n > 1 or mtime < time.time() - STALE_SECONDS):
        return header, None
    return header, (total, count)


def current_usage(maildir: Path, limit: int | None = None) -> tuple[int, int]:
    """(bytes, messages) used by the Maildir, from `maildirsize`, recalculated when needed.
    `limit`: the byte limit we enforce (0 = unlimited), written into the header; None keeps
    whatever limits the file has. A missing Maildir uses nothing and creates nothing."""
    maildir = Path(maildir)
    got = _read(maildir)
    header: Limits | None = None
    if got is not None:
        header, totals = _parse(got[0], got[1], limit, str(maildir))
        if totals is not None:
            return totals
    elif not maildir.is_dir():
        return 0, 0
    limits = Limits(limit, 0) if limit is not None else (header or Limits())
    return rescan(maildir, limits)


def add_usage(maildir: Path, size: int, count: int = 1) -> None:
    """Append a `<bytes> <count>` line (O_APPEND, one write) if `maildirsize` exists; when it
    does not, the next current_usage() recalculates it anyway. OSError when the line could not
    be written whole (the caller then removes the file so that it is recalculated)."""
    try:
        fd = os.open(Path(maildir) / MAILDIRSIZE, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    line = f"{size} {count}\n".encode()
    try:
        if os.write(fd, line) != len(line):  # a partial line would corrupt the next ones
            raise OSError(errno.ENOSPC, "short write", str(Path(maildir) / MAILDIRSIZE))
    finally:
        os.close(fd)


def reset(maildir: Path) -> tuple[int, int]:
    """Recalculate `maildirsize` now, keeping the limits in its header."""
    maildir = Path(maildir)
    limits = read_limits(maildir) or Limits()
    for _ in range(3):
        total, count, written = _rescan(maildir, limits)
        if written:
            return total, count
    # folders kept changing: the old totals must not stay (they may count what was just
    # removed); without the file the next reader recalculates
    try:
        os.unlink(maildir / MAILDIRSIZE)
    except FileNotFoundError:
        pass
    return total, count
