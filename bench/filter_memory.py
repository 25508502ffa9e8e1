"""Peak memory of the filter per message: the filter alone in a child process, Postfix's
smtp-sink as the next hop; one message of each size, then several in parallel.

Run: `.venv/bin/python bench/filter_memory.py [--sizes 1,10,50] [--parallel 4]` (sizes in MB).
Reports, per size, the child's peak RSS growth (VmHWM after minus VmRSS before) divided by the
message size: what one in-flight message costs (issue #14: at most 2x).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHILD = textwrap.dedent("""
    import asyncio, sys
    from mailpolicy import config
    from mailpolicy.smtp.server import start
    from mailpolicy.store import Store

    async def main():
        cfg = config.from_dict({
            "paths": {"state_dir": sys.argv[1]},
            "listen": {"filter": f"127.0.0.1:{sys.argv[2]}"},
            "reinject": {"host": "127.0.0.1", "port": int(sys.argv[3])},
            "limits": {"message_size_limit": "200M"},
            "filter": {"hostname": "mx.bench.test"},
            "log": {"level": "warning"}})
        store = await Store.open(cfg.store_url)
        await store.create_domain("bench.test")
        await store.create_mailbox("u@bench.test")
        await start(cfg, store)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_hwm(pid: int) -> None:
    """Reset the peak RSS counter (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def message(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    head = b"From: a@sender.test\r\nTo: u@bench.test\r\nSubject: big\r\n\r\n"
    return head + line * (size // len(line))


def send(port: int, msg: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=300) as c:
        c.sendmail("a@sender.test", ["u@bench.test"], msg)


def measure(pid: int, port: int, size_mb: int, parallel: int) -> float:
    msg = message(size_mb * 1024 * 1024)
    time.sleep(0.5)
    before = status_kb(pid, "VmRSS")
    reset_hwm(pid)
    threads = [threading.Thread(target=send, args=(port, msg)) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    peak = status_kb(pid, "VmHWM")
    return (peak - before) * 1024 / (len(msg) * parallel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,50")
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mp-filter-mem-"))
    try:
        with filter_child(work, "100") as (pid, filter_port):
            for mb in (int(x) for x in args.sizes.split(",")):
                one = measure(pid, filter_port, mb, 1)
                many = measure(pid, filter_port, mb, args.parallel)
                print(f"{mb:>4} MB: peak RSS growth per message {one:.2f}x (one), "
                      f"{many:.2f}x ({args.parallel} in parallel)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def filter_child(work: Path, sink_sessions: str) -> Iterator[tuple[int, int]]:
    """Postfix's smtp-sink as the next hop and the filter alone in a child process (CHILD)
    with its state under `work`; yields (the child's pid, the filter's port)."""
    sink_port, filter_port = free_port(), free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["/usr/sbin/smtp-sink", *user, f"127.0.0.1:{sink_port}",
                             sink_sessions], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(work), str(filter_port),
                              str(sink_port)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for _ in range(100):  # log lines may come first
            if child.stdout.readline().strip() in ("ready", ""):
                break
        yield child.pid, filter_port
    finally:
        child.terminate()
        sink.terminate()
        child.wait(10)
        sink.wait(10)

if __name__ == "__main__":
    main()
