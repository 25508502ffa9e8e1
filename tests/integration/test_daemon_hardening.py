"""The daemon as an operator meets it: one daemon per state directory (a second one exits with
a clear message and takes nothing from the first), its directories made or named, stale Maildir
tmp/ files swept at start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fulldisk import small_fs
from test_daemon_serve import SERVE, free_port, stop, wait_listening

from mailpolicy.maildir.sweep import STALE_AFTER
from mailpolicy.runtime import statedir


def _config(tmp: Path, name: str, extra: str = "") -> tuple[Path, int]:
    ports = {n: free_port() for n in ("policy", "socketmap", "filter", "lmtp")}
    listen = "\n".join(f'{n} = "127.0.0.1:{p}"' for n, p in ports.items())
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f'[listen]\n{listen}\nlmtp_socket = "{tmp / "state" / "lmtp.sock"}"\n'
                   f'[paths]\nstate_dir = "{tmp / "state"}"\n'
                   f'[limits]\nlmtp_workers = 1\npolicy_workers = 1\n{extra}')
    return cfg, ports["lmtp"]


def _lmtp_banner(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        return s.recv(100)




def test_a_second_daemon_on_the_same_state_dir_exits_and_leaves_the_first_alone(tmp_path):
    cfg1, lmtp1 = _config(tmp_path, "one")
    cfg2, lmtp2 = _config(tmp_path, "two")  # other TCP ports, same state dir and LMTP socket
    first = subprocess.Popen([*SERVE, str(cfg1)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert wait_listening(lmtp1, time.monotonic() + 30)
        sock = tmp_path / "state" / "lmtp.sock"
        assert _lmtp_banner(sock).startswith(b"220")
        second = subprocess.run([*SERVE, str(cfg2)], capture_output=True, timeout=60)
        assert second.returncode == 1
        err = second.stderr.decode()
        assert "another mailpolicy daemon" in err and str(first.pid) in err, err
        assert sock.exists() and _lmtp_banner(sock).startswith(b"220")
        assert first.poll() is None
    finally:
        stop(first)
    # the lock goes with its daemon: a new one starts on the same state dir
    again = subprocess.Popen([*SERVE, str(cfg2)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert wait_listening(lmtp2, time.monotonic() + 30)
    finally:
        stop(again)


def test_a_live_socket_is_never_replaced(tmp_path):
    from mailpolicy.runtime.sockets import clear_stale_socket

    path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    with pytest.raises(OSError, match="in use"):
        clear_stale_socket(path, "LMTP socket")
    assert path.exists()
    live.close()
    clear_stale_socket(path, "LMTP socket")  # now stale: removed
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        clear_stale_socket(path)


def test_stale_tmp_files_are_swept_at_start(tmp_path):
    cfg, lmtp = _config(tmp_path, "one")
    tmp = tmp_path / "state" / "mail" / "example.com" / "joe" / "Maildir" / "tmp"
    tmp.mkdir(parents=True)
    from mailpolicy.maildir.sweep import _host

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    old, fresh = tmp / "1.M1P1.host,S=5", tmp / "2.M1P1.host,S=5"
    killed = tmp / f"3.M1P{int(gone.stdout)}Q1.{_host()},S=5"  # its writer was SIGKILLed
    for p, age in ((old, STALE_AFTER + 60), (fresh, 60), (killed, 120)):
        p.write_bytes(b"hello")
        os.utime(p, (time.time() - age,) * 2)
    proc = subprocess.Popen([*SERVE, str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        assert wait_listening(lmtp, deadline)
        while (old.exists() or killed.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not old.exists() and not killed.exists() and fresh.exists()
    finally:
        stop(proc)


def test_a_directory_it_may_not_create_is_named_with_the_command(tmp_path):
    with small_fs() as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        with pytest.raises(statedir.StartupError) as e:
            statedir.ensure_dir(ro / "mailpolicy", "admin socket directory", group="root")
        assert f"install -d -o root -g root -m 0750 {ro / 'mailpolicy'}" in e.value.strerror
        cfg, _ = _config(tmp_path, "one", '\n[admin]\ngroup = "root"\n')
        cfg.write_text(cfg.read_text().replace(
            "[paths]\n", f'[paths]\nadmin_socket = "{ro / "run" / "admin.sock"}"\n'))
        res = subprocess.run([*SERVE, str(cfg)], capture_output=True, timeout=60)
        assert res.returncode == 1
        assert f"install -d -o root -g root -m 0750 {ro / 'run'}" in res.stderr.decode()


def test_the_directories_it_may_create_are_created_with_their_modes(tmp_path):
    d = tmp_path / "run" / "mailpolicy"
    old = os.umask(0o077)
    try:
        statedir.ensure_dir(d, "admin socket directory")
    finally:
        os.umask(old)
    assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o750


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to start the daemon as another user")
def test_without_systemd_the_missing_runtime_dir_is_named_and_the_command_fixes_it(tmp_path):
    """README: as an unprivileged user the daemon cannot create /run/<dir>; it exits naming
    the `install -d` command, and once root ran it the daemon starts."""
    import pwd

    from test_admin_support import cli_as

    cli, env = cli_as("nobody", "nogroup")
    serve = [cli[0], "-c", "import sys; from mailpolicy.runtime.daemon import run; "
             "sys.exit(run(sys.argv[1]))"]
    home = Path(tempfile.mkdtemp(prefix="mp-nosystemd-"))
    rundir = Path(tempfile.mkdtemp(prefix="mp-run-", dir="/run")) / "mailpolicy"
    try:
        os.chmod(home, 0o755)
        os.chmod(rundir.parent, 0o755)  # as /run is
        state = home / "state"
        state.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        cfg, lmtp = _config(home, "one", '\n[admin]\ngroup = "nogroup"\n')
        cfg.write_text(cfg.read_text().replace(
            "[paths]\n", f'[paths]\nadmin_socket = "{rundir / "admin.sock"}"\n'))
        os.chmod(cfg, 0o644)
        start = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--init-groups",
                 "sh", "-c", 'umask 027; exec "$@"', "sh", *serve, str(cfg)]
        res = subprocess.run(start, capture_output=True, text=True, timeout=60, env=env,
                             cwd="/")
        assert res.returncode == 1, res.stderr
        command = f"install -d -o nobody -g nogroup -m 0750 {rundir}"
        assert command in res.stderr
        subprocess.run(command.split(), check=True)  # what the admin runs as root
        proc = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd="/")
        try:
            deadline = time.monotonic() + 60
            assert wait_listening(lmtp, deadline)
            while not (rundir / "admin.sock").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (rundir / "admin.sock").exists()
        finally:
            stop(proc)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(rundir.parent, ignore_errors=True)
