"""mailpolicy as an unprivileged subprocess for the e2e harness, plus the harness's small utilities.

Run as a script (`python harness_mailpolicy.py CONFIG`) it is the fallback runner: it starts each
service module that exists on its own and says which one failed, for as long as `mailpolicy serve`
cannot start them all.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# component -> its listen key in the config
LISTENERS = {"policy": "policy", "socketmap": "socketmap", "filter": "filter", "lmtp": "lmtp",
             "filter_originating": "filter_originating"}
CLI = "import sys; from mailpolicy.cli import main; sys.exit(main())"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class HarnessError(AssertionError):
    """A component of the stack did not start or a wait ran out; the text says which and why."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_open(path: Path) -> bool:
    """Something accepts connections on the Unix socket `path` (we run as root here)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"({path}: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path}: empty)"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               details: Callable[[], str] = lambda: "", interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns a true value; bounded in time. Raise HarnessError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def cli_command(python: str, *args: str) -> list[str]:
    """`mailpolicy ARGS` run by the given interpreter (no console-script shebang involved)."""
    return [python, "-c", CLI, *args]


def _lazy(make: Callable[[], list[Any]]) -> Any:
    """Yield from make() only when iteration gets that far."""
    yield from make()


def _interpreters() -> list[tuple[str, dict[str, str]]]:
    """This interpreter, then the system's one of the same version with our site-packages
    (a venv made from a Python under /root cannot be executed by an unprivileged user)."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONUNBUFFERED"] = "1"
    out = [(sys.executable, dict(env))]
    v = sys.version_info
    system = f"/usr/bin/python{v.major}.{v.minor}"
    if os.access(system, os.X_OK) and Path(sys.executable).resolve() != Path(system).resolve():
        paths = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        out.append((system, {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}))
    return out


def _readable_copy() -> list[tuple[str, dict[str, str]]]:
    """The system interpreter over a world-readable copy of the package and its site-packages:
    the last resort when the checkout or the venv lies below a directory other users cannot
    enter (e.g. a clone under /root)."""
    v = sys.version_info
    system = f"/usr/bin/python{v.major}.{v.minor}"
    if not os.access(system, os.X_OK):
        return []
    base = Path(tempfile.mkdtemp(prefix="mailpolicy-e2e-py-"))
    atexit.register(shutil.rmtree, base, True)
    base.chmod(0o755)
    shutil.copytree(REPO / "mailpolicy", base / "mailpolicy")
    paths = [str(base)]
    for i, sp in enumerate(dict.fromkeys((sysconfig.get_paths()["purelib"],
                                          sysconfig.get_paths()["platlib"]))):
        shutil.copytree(sp, base / f"site{i}", symlinks=True,
                        ignore=shutil.ignore_patterns("mailpolicy*", "__editable__*"))
        paths.append(str(base / f"site{i}"))
    for d in (base, *base.rglob("*")):
        if not d.is_symlink():
            mode = d.stat().st_mode
            d.chmod(mode | (0o555 if d.is_dir() or mode & 0o100 else 0o444))
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return [(system, {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(paths)})]


@functools.cache
def interpreter_for(uid: int, gid: int) -> tuple[str, dict[str, str]]:
    """An interpreter (and environment) that `uid` can run with mailpolicy importable."""
    tried = []
    for python, env in [*_interpreters(), *_lazy(_readable_copy)]:
        try:
            res = subprocess.run([python, "-c", "import mailpolicy.config, mailpolicy.store"],
                                 user=uid, group=gid, extra_groups=[], env=env, cwd="/",
                                 capture_output=True, text=True, timeout=60)
        except OSError as e:
            tried.append(f"{python}: {e}")
            continue
        if res.returncode == 0:
            return python, env
        tried.append(f"{python}: {res.stderr.strip()[-300:]}")
    raise HarnessError(f"no Python that uid {uid} can run with mailpolicy importable:\n"
                       + "\n".join(tried))


class Mailpolicy:
    """The daemon under test, running as `uid` (Dovecot refuses to read root's Maildirs)."""

    def __init__(self, work: Path, cfg_file: Path, cfg: Any, uid: int, gid: int) -> None:
        self.work, self.cfg_file, self.cfg = work, cfg_file, cfg
        self.uid, self.gid = uid, gid
        self.logfile = work / "mailpolicy.log"
        self.proc: subprocess.Popen | None = None

    def listeners(self) -> dict[str, tuple[str, int]]:
        from mailpolicy.config import split_hostport

        return {name: split_hostport(getattr(self.cfg.listen, key))
                for name, key in LISTENERS.items() if getattr(self.cfg.listen, key)}

    def listener_report(self) -> list[str]:
        report = [f"mailpolicy {name} on {host}:{port}: "
                  f"{'up' if port_open(port, host) else 'NOT LISTENING'}"
                  for name, (host, port) in self.listeners().items()]
        for name, path in self.unix_listeners().items():
            report.append(f"mailpolicy {name} on {path}: "
                          f"{'up' if unix_open(path) else 'NOT LISTENING'}")
        return report

    def unix_listeners(self) -> dict[str, Path]:
        """The Unix sockets: LMTP's (when set) and the admin socket."""
        out = {"admin": self.cfg.admin_socket}
        if self.cfg.lmtp_socket is not None:
            out["lmtp"] = self.cfg.lmtp_socket
        return out

    def all_up(self) -> bool:
        """Every listener accepts connections (the LMTP socket is bound before the workers
        serve it, so it alone says nothing about the daemon being ready)."""
        return (all(port_open(p, h) for h, p in self.listeners().values())
                and all(unix_open(p) for p in self.unix_listeners().values()))

    def command(self, python: str) -> list[str]:
        return cli_command(python, "serve", "-c", str(self.cfg_file))

    def start(self) -> None:
        python, env = interpreter_for(self.uid, self.gid)
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(
                self.command(python), user=self.uid, group=self.gid, extra_groups=[], env=env,
                cwd=str(self.cfg.state_dir), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(
                    f"mailpolicy exited with {self.proc.returncode} "
                    f"at start:\n" + "\n".join(self.listener_report())
                    + f"\n--- mailpolicy log ---\n{tail(self.logfile)}")
            return self.all_up()

        wait_until(up, START_TIMEOUT, "mailpolicy's listeners",
                   lambda: "\n".join(self.listener_report())
                   + f"\n--- mailpolicy log ---\n{tail(self.logfile)}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.running():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()
