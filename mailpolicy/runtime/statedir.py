"""The daemon's own directories and the lock that makes it the only daemon on its state dir."""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
from pathlib import Path

LOCK_NAME = "mailpolicy.lock"
DIR_MODE = 0o750


class StartupError(OSError):
    """The daemon cannot start; the message says why and what to run about it."""


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def ensure_dir(path: Path, what: str, group: str = "", mode: int = DIR_MODE) -> None:
    """Create `path` (and its parents) when missing, `mode` whatever the umask; without the
    permission to, a StartupError naming the command that creates it (as systemd's
    RuntimeDirectory= or StateDirectory= would)."""
    path = Path(path)
    if os.path.isdir(path):  # False (not an error) when we may not even look
        return
    try:
        path.mkdir(parents=True, mode=mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise StartupError(errno.ENOTDIR, f"{what} {path} exists and is not a directory"
                               ) from None
        return
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        owner = _user()
        grp_name = group if group and _group_exists(group) else _own_group()
        raise StartupError(
            errno.EACCES,
            f"cannot create the {what} {path} as user {owner}; create it once as root: "
            f"install -d -o {owner} -g {grp_name} -m {mode:04o} {path}") from None
    os.chmod(path, mode)
    if group and _group_exists(group):
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except PermissionError:
            pass  # not a member: the group stays ours


def _own_group() -> str:
    try:
        return grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        return str(os.getegid())


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


class StateLock:
    """An exclusive flock on `{state_dir}/mailpolicy.lock`, held for the daemon's lifetime
    (released by the kernel even on SIGKILL). The file holds the owner's pid."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StartupError naming the daemon that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise StartupError(
                errno.EADDRINUSE,
                f"another mailpolicy daemon (pid {owner}) is running on the state directory "
                f"{self.path.parent}; stop it first, or give this one its own paths.state_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
