"""Unix socket files: never take over one a live server still listens on."""

from __future__ import annotations

import contextlib
import errno
import socket
import stat
from pathlib import Path

PROBE_TIMEOUT = 1.0


def clear_stale_socket(path: Path, what: str = "socket") -> None:
    """Remove a leftover socket file at `path` so that it can be bound again. Refuses (OSError
    EADDRINUSE) when a live server still accepts on it, and (EEXIST) when `path` is something
    other than a socket; a missing path is fine."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{what} {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    except TimeoutError:
        pass  # a live server whose backlog is full: in use all the same
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{what} {path} is in use by another server")
