"""LMTP and policy worker processes under the daemon: all deliveries land, policy connections
are spread over the workers, SIGTERM/SIGKILL leave no worker behind, a killed worker is
replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailpolicy import config
from mailpolicy.store import Store

pytestmark = pytest.mark.timeout(120)

SERVE = [sys.executable, "-c", "import sys; from mailpolicy.runtime.daemon import run; "
         "sys.exit(run(sys.argv[1]))"]
WORKER_MARK = b"mailpolicy.runtime.workers\0%s\0"  # the cmdline of a worker of a service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`mailpolicy serve` with 2 LMTP workers (a TCP and a Unix LMTP listener) and 2 policy
    workers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {n: free_port() for n in ("policy", "socketmap", "filter", "lmtp",
                                               "filter_originating")}
        self.unix = tmp / "lmtp.sock"
        listen = "\n".join(f'{n} = "127.0.0.1:{p}"' for n, p in self.ports.items())
        self.conf = tmp / "mailpolicy.toml"
        self.conf.write_text(f'[listen]\n{listen}\nlmtp_socket = "{self.unix}"\n'
                             f'[paths]\nstate_dir = "{tmp / "state"}"\n'
                             f'[limits]\nlmtp_workers = 2\npolicy_workers = 2\n'
                             f'[filter]\nsrs_domain = "mx.example.test"\n'
                             f'[log]\nlevel = "warning"\n')
        self.cfg = config.load(self.conf)
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen | None = None

    async def prepare(self) -> None:
        self.cfg.state_dir.mkdir(parents=True)
        store = await Store.open(self.cfg.store_url)
        await store.create_domain("example.test")
        await store.create_mailbox("alice@example.test")
        await store.close()

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*SERVE, str(self.conf)], stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            if (len(self.workers()) == 2 and len(self.workers("policy")) == 2
                    and self.cfg.admin_socket.exists() and self.greets()):
                return
            time.sleep(0.1)
        raise AssertionError("daemon not ready: " + self.log.read_text()[-3000:])

    def greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ports["lmtp"]), timeout=2) as s:
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def workers(self, service: str = "lmtp") -> set[int]:
        assert self.proc is not None
        mark = WORKER_MARK % service.encode()
        return {pid for pid, ppid in processes() if ppid == self.proc.pid and alive(pid)
                and mark in cmdline(pid)}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def processes() -> list[tuple[int, int]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            out.append((int(d.name), int(stat.rsplit(")", 1)[1].split()[1])))
    return out


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_gone(pids: set[int], timeout: float = 15) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def deliver(family_addr: tuple[int, object], tag: str, n: int) -> list[bytes]:
    """One LMTP session sending n messages; their final replies."""
    family, addr = family_addr
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(addr)
    f = s.makefile("rb")
    try:
        assert f.readline().startswith(b"220")
        s.sendall(b"LHLO workers.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        out = []
        for i in range(n):
            s.sendall(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
            for _ in range(3):
                f.readline()
            s.sendall(b"Subject: %s-%d\r\n\r\nbody\r\n.\r\n" % (tag.encode(), i))
            out.append(f.readline())
        s.sendall(b"QUIT\r\n")
        return out
    finally:
        f.close()
        s.close()


def burst(daemon: Daemon, tag: str, conns: int, per_conn: int, unix: bool = False) -> list[bytes]:
    addr = ((socket.AF_UNIX, str(daemon.unix)) if unix
            else (socket.AF_INET, ("127.0.0.1", daemon.ports["lmtp"])))
    results: list[bytes] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        got = deliver(addr, f"{tag}{k}", per_conn)
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def stored(daemon: Daemon) -> dict[str, str]:
    """Subject → the pid in the Maildir file name (which process wrote it)."""
    new = daemon.cfg.maildir_root / "example.test" / "alice" / "Maildir" / "new"
    out = {}
    for p in new.iterdir():
        subject = p.read_bytes().split(b"Subject: ", 1)[1].split(b"\n", 1)[0].decode()
        out[subject] = p.name.split("P", 1)[1].split("Q", 1)[0]
    return out


@pytest.fixture
async def daemon(tmp_path):
    d = Daemon(tmp_path)
    await d.prepare()
    await asyncio.to_thread(d.start)
    yield d
    d.stop()


POLICY_REQUEST = ("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n"
                  "sender=s@remote.test\nrecipient={}\ninstance=x\n\n")


def ask_policy(daemon: Daemon, conns: int) -> tuple[list[bytes], dict[int, int]]:
    """On each of `conns` connections held open together: a request for alice (exists) and one
    for nobody (unknown in a reject domain). The replies, and which process holds how many of
    the connections (from /proc: the socket inodes of the established connections)."""
    socks = [socket.create_connection(("127.0.0.1", daemon.ports["policy"]), timeout=10)
             for _ in range(conns)]
    try:
        replies = []
        for s in socks:
            f = s.makefile("rb")
            for rcpt in ("alice@example.test", "nobody@example.test"):
                s.sendall(POLICY_REQUEST.format(rcpt).encode())
                replies.append(f.readline())
                assert f.readline() == b"\n"
            f.close()
        return replies, socket_owners(daemon.ports["policy"])
    finally:
        for s in socks:
            s.close()


def socket_owners(port: int) -> dict[int, int]:
    """pid → established TCP connections it holds whose local port is `port`."""
    inodes = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            inodes.add(f"socket:[{fields[9]}]")
    owners: dict[int, int] = {}
    for pid, _ppid in processes():
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if held := sum(1 for link in links if link in inodes):
            owners[pid] = held
    return owners


async def test_policy_workers_share_the_port(daemon):
    workers = daemon.workers("policy")
    replies, owners = await asyncio.to_thread(ask_policy, daemon, 16)
    assert replies == [b"action=DUNNO\n", b"action=550 5.1.1 mailbox does not exist\n"] * 16
    # the kernel spread the 16 connections over both workers; the main process holds none
    assert set(owners) == workers and sum(owners.values()) == 16, (owners, workers)


async def test_two_workers_deliver_all_over_tcp_and_unix_then_sigterm_stops_them(daemon):
    workers = daemon.workers()
    policy = daemon.workers("policy")
    tcp = await asyncio.to_thread(burst, daemon, "tcp", 16, 8)
    unix = await asyncio.to_thread(burst, daemon, "unix", 4, 5, True)
    assert len(tcp) == 128 and len(unix) == 20
    assert all(r.startswith(b"250 2.0.0") for r in tcp + unix), set(tcp + unix)
    got = stored(daemon)
    assert len(got) == 148
    # the kernel spread the TCP connections over both workers; the Unix socket is served too
    assert {got[f"tcp{k}-{i}"] for k in range(16) for i in range(8)} == {str(p) for p in workers}
    assert {got[f"unix{k}-{i}"] for k in range(4) for i in range(5)} <= {str(p) for p in workers}
    assert str(daemon.proc.pid) not in got.values()  # the main process serves no LMTP
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=20) == 0
    assert not wait_gone(workers | policy, 2), "worker processes outlived the daemon"
    assert "worker_exited" not in daemon.log.read_text()


async def replaced(daemon: Daemon, service: str) -> set[int]:
    """SIGKILL one worker of `service`; the workers once its replacement runs."""
    before = daemon.workers(service)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = daemon.workers(service)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.1)
    now = daemon.workers(service)
    assert len(now) == 2 and victim not in now and len(now & before) == 1
    return now


async def test_a_killed_worker_is_replaced(daemon):
    now = await replaced(daemon, "lmtp")
    res = await asyncio.to_thread(burst, daemon, "after", 8, 4)
    assert len(res) == 32 and all(r.startswith(b"250") for r in res)
    assert {v for k, v in stored(daemon).items() if k.startswith("after")} <= {
        str(p) for p in now}
    assert "lmtp.worker_exited" in daemon.log.read_text()


async def test_a_killed_policy_worker_is_replaced(daemon):
    now = await replaced(daemon, "policy")
    replies, owners = await asyncio.to_thread(ask_policy, daemon, 8)
    assert replies == [b"action=DUNNO\n", b"action=550 5.1.1 mailbox does not exist\n"] * 8
    assert set(owners) <= now
    assert "policy.worker_exited" in daemon.log.read_text()


async def test_workers_exit_when_the_daemon_is_killed(daemon):
    workers = daemon.workers() | daemon.workers("policy")
    daemon.proc.kill()
    daemon.proc.wait()
    assert not wait_gone(workers, 10), "orphaned worker processes"
