"""Benchmark: mailpolicy LMTP vs Dovecot LMTP (mail_fsync=always), same messages, one run.

    .venv/bin/python bench/lmtp.py [--count 1000] [--reps 3] [--conc 1,8,32]
                                   [--sizes 2048,102400] [--workers 0] [--quick]

Each cell sends `count` messages with Postfix's `smtp-source -L` (one recipient, sessions kept
open) to each server in turn (interleaved), `reps` times, and prints median [min-max] msgs/s,
the paired ratio mailpolicy/Dovecot, and the CPU per message of each server's process tree,
with the machine's load before and after. mailpolicy runs as the daemon runs LMTP
(`limits.lmtp_workers`, default one per core) at log level info. Every delivered message is
counted in the Maildir afterwards. Needs /usr/sbin/smtp-source (postfix) and /usr/sbin/dovecot
with the lmtp service (dovecot-lmtpd). On failure the work directory is kept and the logs'
tails are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Report, tree_cpu

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A server did not start or lost messages: the logs tell why."""
SMTP_SOURCE = "/usr/sbin/smtp-source"
DOVECOT = "/usr/sbin/dovecot"
DOMAIN = "bench.test"

MAILPOLICY_SERVER = """
import asyncio, json, signal, sys
from mailpolicy import config
from mailpolicy.runtime import logs, workers
from mailpolicy.runtime.daemon import _close
from mailpolicy.services import by_name
from mailpolicy.store import Store

async def main():
    cfg = config.from_dict(json.loads(sys.argv[1]))
    logs.setup(cfg)
    store = await Store.open(cfg.store_url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    servers = await workers.start(cfg, store, by_name("lmtp"))  # as the daemon does
    print("READY", flush=True)
    await stop.wait()
    for s in servers:
        await _close(s)
    await store.close()

asyncio.run(main())
"""

DOVECOT_CONF = """
instance_name = mpbench-{pid}
base_dir = {work}/dovecot-run
state_dir = {work}/dovecot-state
log_path = {work}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{work}/dovecot-mail/%d/%n/Maildir
mail_fsync = always
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={work}/dovecot-mail/%d/%n allow_all_users=yes
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not listen on port {port}")


def start_dovecot(work: Path) -> tuple[subprocess.Popen, int]:
    user = pwd.getpwnam("mail")
    port = free_port()
    mail = work / "dovecot-mail"
    mail.mkdir()
    os.chown(mail, user.pw_uid, user.pw_gid)
    conf = work / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(pid=os.getpid(), work=work, uid=user.pw_uid,
                                        gid=user.pw_gid, port=port))
    check = subprocess.run([DOVECOT, "-c", str(conf), "-n"], capture_output=True, text=True)
    if check.returncode:
        raise BenchError(f"dovecot config refused: {check.stderr}")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc, "dovecot")
    return proc, port


async def _prepare_store(data: dict, names: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from mailpolicy import config
    from mailpolicy.store import Store

    store = await Store.open(config.from_dict(data).store_url)
    await store.create_domain(DOMAIN)
    for n in names:
        await store.create_mailbox(f"{n}@{DOMAIN}")
    await store.close()


def start_mailpolicy(work: Path, names: list[str], workers: int,
                     ) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    data = {"paths": {"state_dir": str(work / "mp")},
            "listen": {"lmtp": f"127.0.0.1:{port}"},
            "limits": {"message_size_limit": 52428800, "lmtp_workers": workers},
            "log": {"level": "info"}}
    asyncio.run(_prepare_store(data, names))
    log = open(work / "mailpolicy.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", MAILPOLICY_SERVER, json.dumps(data)],
                            stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"READY":
        raise BenchError("mailpolicy LMTP did not start")
    wait_port(port, proc, "mailpolicy")
    return proc, port, work / "mp" / "mail"


def count_new(maildir_root: Path, name: str) -> int:
    new = maildir_root / DOMAIN / name / "Maildir" / "new"
    return len(os.listdir(new)) if new.is_dir() else 0


def run_point(port: int, name: str, size: int, conc: int, count: int) -> float:
    cmd = [SMTP_SOURCE, "-L", "-4", "-d", "-s", str(conc), "-m", str(count), "-l", str(size),
           "-f", f"sender@{DOMAIN}", "-t", f"{name}@{DOMAIN}", "-M", "bench.client",
           f"127.0.0.1:{port}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if res.returncode:
        raise BenchError(f"smtp-source failed: {res.stdout} {res.stderr}")
    return count / elapsed


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--sizes", default="2048,102400")
    ap.add_argument("--workers", type=int, default=0,
                    help="limits.lmtp_workers for mailpolicy (0 = one per core, 1 = in-process)")
    ap.add_argument("--quick", action="store_true", help="300 messages per cell")
    args = ap.parse_args()
    if args.quick:
        args.count = min(args.count, 300)
    for tool in (SMTP_SOURCE, DOVECOT):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is missing: apt-get install postfix dovecot-lmtpd")
    concs = [int(c) for c in args.conc.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    points = [(s, c) for s in sizes for c in concs]
    names = [f"u{s}c{c}r{r}" for s, c in points for r in range(args.reps)]
    work = Path(tempfile.mkdtemp(prefix="mpbench-"))
    work.chmod(0o711)  # Dovecot delivers as user mail below it
    procs: list[subprocess.Popen] = []
    failed = True
    report = Report(f"LMTP delivery, {args.count} messages per run (smtp-source -L)",
                    anchor="dovecot")
    try:
        dproc, dport = start_dovecot(work)
        procs.append(dproc)
        mproc, mport, mroot = start_mailpolicy(work, names, args.workers)
        procs.append(mproc)
        droot = work / "dovecot-mail"
        print(f"{args.count} msgs per run, {args.reps} interleaved reps; cores: "
              f"{os.cpu_count()}; lmtp_workers: {args.workers} (0: one per core); "
              f"mailpolicy log level info", flush=True)
        targets = (("dovecot", dproc, dport, droot), ("mailpolicy", mproc, mport, mroot))
        for size, conc in points:
            for r in range(args.reps):
                name = f"u{size}c{conc}r{r}"
                for label, proc, port, root in targets:
                    cpu0 = tree_cpu(proc.pid)
                    rate = run_point(port, name, size, conc, args.count)
                    cpu = (tree_cpu(proc.pid) - cpu0) * 1000 / args.count
                    report.add(f"{size // 1024} KB c{conc}", label, rate, cpu)
                    got = count_new(root, name)
                    if got != args.count:
                        raise BenchError(f"{label}: {got} of {args.count} messages stored")
            print(f"  {size // 1024} KB c{conc} done", flush=True)
        failed = False
    except BenchError as e:
        print(f"bench/lmtp.py failed: {e}\n--- mailpolicy log (tail) ---\n"
              f"{tail(work / 'mailpolicy.log')}\n--- dovecot log (tail) ---\n"
              f"{tail(work / 'dovecot.log')}", file=sys.stderr)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if failed or os.environ.get("KEEP"):
            print("work directory kept:", work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        return 1
    report.print_table()
    print("target: mailpolicy >= 1.0x Dovecot in every cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
