"""`mailpolicy serve`: every listener comes up, SIGTERM stops it cleanly, bad config exits 2."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SERVE = [sys.executable, "-c", "import sys; from mailpolicy.runtime.daemon import run; "
         "sys.exit(run(sys.argv[1] if len(sys.argv) > 1 else None))"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {n: free_port() for n in ("policy", "socketmap", "filter", "lmtp",
                                      "filter_originating")}
    listen = "\n".join(f'{n} = "127.0.0.1:{p}"' for n, p in ports.items())
    cfg = tmp_path / "mailpolicy.toml"
    cfg.write_text(f'[listen]\n{listen}\n[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                   '[filter]\nsrs_domain = "mx.example.test"\n')
    return cfg, ports


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the daemon and wait for it (SIGKILL after `timeout` seconds)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_listening(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def test_serve_starts_every_listener_and_stops_on_sigterm(tmp_path):
    cfg, ports = write_config(tmp_path)
    proc = subprocess.Popen([*SERVE, str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        for name, port in ports.items():
            assert wait_listening(port, deadline), f"{name} never listened"
        sock = tmp_path / "state" / "admin.sock"
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists()
        assert (tmp_path / "state" / "mailpolicy.db").exists()
        proc.send_signal(signal.SIGHUP)  # reload must not stop it
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode()
    assert "daemon.ready" in out and "daemon.stopping" in out


def test_serve_with_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[limits]\nmessage_size_limit = "lots"\n')
    res = subprocess.run([*SERVE, str(cfg)], capture_output=True, timeout=30)
    assert res.returncode == 2
    assert b"limits.message_size_limit" in res.stderr


def test_serve_refuses_an_unqualified_srs_domain_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[paths]\nstate_dir = "{tmp_path}"\n[filter]\nsrs_domain = "vm"\n')
    res = subprocess.run([*SERVE, str(cfg)], capture_output=True, timeout=30)
    assert res.returncode == 2
    assert b"filter.srs_domain: 'vm'" in res.stderr and b"fully qualified" in res.stderr


def test_serve_without_config_uses_embedded_defaults_under_var(tmp_path):
    if Path("/etc/mailpolicy/mailpolicy.toml").exists():
        pytest.skip("a system config exists on this machine")
    proc = subprocess.Popen(SERVE, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "var" / "admin.sock").exists() and time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.skip("default ports are in use on this machine")
            time.sleep(0.05)
        assert (tmp_path / "var" / "admin.sock").exists()
        assert (tmp_path / "var" / "mailpolicy.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_stops_it_without_worker_restarts(tmp_path, sig):
    """A terminal's Ctrl-C (`make run`) sends SIGINT to every process of the foreground group,
    `kill -TERM -PGID` SIGTERM: the daemon alone must get it and stop its workers itself, not
    see them exit and restart them while it stops."""
    cfg, ports = write_config(tmp_path)
    proc = subprocess.Popen([*SERVE, str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own group, as a shell's job
    try:
        deadline = time.monotonic() + 30
        for name, port in ports.items():
            assert wait_listening(port, deadline), f"{name} never listened"
        time.sleep(0.5)
        os.killpg(proc.pid, sig)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = proc.stdout.read().decode()
    assert "daemon.stopping" in out
    assert "worker_exited" not in out and "Unknown child process" not in out, out[-3000:]
