"""LMTP server in its own process: SIGKILL during a burst loses nothing acknowledged; memory."""

from __future__ import annotations

import asyncio
import json
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
from mailpolicy.maildir.usage import current_usage
from mailpolicy.store import Store

pytestmark = pytest.mark.timeout(120)

SERVER = """
import asyncio, json, sys
from mailpolicy import config
from mailpolicy.runtime import logs
from mailpolicy.store import Store
from mailpolicy.lmtp import server

async def main():
    cfg = config.from_dict(json.loads(sys.argv[1]))
    logs.setup(cfg)
    store = await Store.open(cfg.store_url)
    await server.start(cfg, store)
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def prepare(tmp_path: Path, limit: int) -> dict:
    data = {"paths": {"state_dir": str(tmp_path)},
            "listen": {"lmtp": f"127.0.0.1:{free_port()}"},
            "limits": {"message_size_limit": limit - config.SIZE_HEADROOM},
            "log": {"level": "warning"}}
    store = await Store.open(config.from_dict(data).store_url)
    await store.create_domain("example.test")
    await store.create_mailbox("alice@example.test")
    await store.close()
    return data


def spawn(data: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"READY", line
    return proc


def port_of(data: dict) -> int:
    return int(data["listen"]["lmtp"].rsplit(":", 1)[1])


class Session:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def session(port: int) -> Session:
    s = Session(port)
    f = s.reader
    assert f.readline().startswith(b"220")
    s.sock.sendall(b"LHLO crash.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    return s


def send_one(sess: Session, body: bytes) -> bytes:
    f, s = sess.reader, sess.sock
    s.sendall(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    for _ in range(3):
        f.readline()
    s.sendall(body + b".\r\n")
    return f.readline()


def message(n: int, filler: int = 3000) -> bytes:
    return (b"Subject: crash %d\r\nMessage-ID: <%d@crash.test>\r\n\r\n" % (n, n)
            + b"line of body text\r\n" * (filler // 19) + b"END-OF-MESSAGE %d\r\n" % n)


async def test_sigkill_during_burst_loses_no_acknowledged_message(tmp_path):
    data = await prepare(tmp_path, 10 * 1024 * 1024)
    proc = spawn(data)
    acked: set[int] = set()
    lock = threading.Lock()
    counter = iter(range(10**6))

    def client():
        s = None
        try:
            s = session(port_of(data))
            for _ in range(200):  # bounded per client
                with lock:
                    n = next(counter)
                reply = send_one(s, message(n))
                if reply.startswith(b"250"):
                    with lock:
                        acked.add(n)
        except (OSError, AssertionError):
            return  # the server died under us: expected
        finally:
            if s is not None:
                s.close()

    def run():
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        for t in threads:
            t.join(15)

    try:
        await asyncio.to_thread(run)
    finally:
        proc.kill()
        proc.wait()
    assert len(acked) >= 150
    md = tmp_path / "mail" / "example.test" / "alice" / "Maildir"
    stored = {}
    for p in (md / "new").iterdir():
        content = p.read_bytes()
        n = int(content.split(b"Subject: crash ", 1)[1].split(b"\n", 1)[0])
        # a file in new/ is always complete: exactly the message, LF line ends
        expected = (b"Return-Path: <s@remote.test>\nDelivered-To: alice@example.test\n"
                    + message(n).replace(b"\r\n", b"\n"))
        assert content == expected, p.name
        stored[n] = p
    missing = acked - set(stored)
    assert not missing, f"acknowledged but not stored: {sorted(missing)[:10]}"
    # recovery: a new server delivers again; usage counts what is there
    proc = spawn(data)
    try:
        s = await asyncio.to_thread(session, port_of(data))
        assert (await asyncio.to_thread(send_one, s, message(10**6 - 1))).startswith(b"250")
        s.close()
    finally:
        proc.kill()
        proc.wait()
    assert current_usage(md, 0)[1] == len(stored) + 1


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (VmHWM) and return its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status(pid, "VmRSS")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
async def test_peak_memory_for_a_message_at_the_size_limit(tmp_path):
    limit = 24 * 1024 * 1024
    data = await prepare(tmp_path, limit)
    proc = spawn(data)
    head = b"Subject: big\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    n_lines = (limit - len(head)) // len(line)
    pad = limit - len(head) - n_lines * len(line)
    body = head + line * n_lines + b"x" * (pad - 2) + b"\r\n"
    assert len(body) == limit
    try:
        s = await asyncio.to_thread(session, port_of(data))
        await asyncio.to_thread(send_one, s, b"Subject: warm-up\r\n\r\nx\r\n")
        base = await asyncio.to_thread(reset_peak, proc.pid)
        reply = await asyncio.to_thread(send_one, s, body)
        peak = status(proc.pid, "VmHWM")
        s.close()
    finally:
        proc.kill()
        proc.wait()
    assert reply.startswith(b"250"), reply
    delta = peak - base
    print(f"peak RSS delta {delta / limit:.2f}x the message size")
    assert delta < 3 * limit, f"peak RSS grew by {delta / limit:.2f}× the message size"
