"""Benchmark: mailpolicy's policy service against a minimal asyncio DUNNO server (the floor).

    .venv/bin/python bench/policy.py [--requests N] [--mailboxes N]

Builds a temp store of 100,000 mailboxes (bulk SQL), starts both servers as processes and, at
1, 16 and 64 persistent connections, alternates bounded runs against the floor and mailpolicy
(this machine is shared and noisy: medians of the rounds, compared only inside one run), with
two recipient mixes:
  warm: recipients drawn from a working set of 2,000 addresses (primed once, as on a real MX
        where the same recipients recur);
  cold: every request a distinct recipient from the 100,000 (each one a store lookup).
Mix per request: 70% existing mailboxes (some aliases, +ext), 20% unknown in our domains,
10% foreign. The decision log is on (mailpolicy.runtime.logs set-up, stderr to /dev/null).
mailpolicy runs as the daemon runs it: `limits.policy_workers` processes (default one per
core) sharing the port; `--workers 1` measures the single event loop. Also shown: the
server's CPU time per request, all its processes together (steadier than rates on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVELS = (1, 16, 64)
TIME_CAP = 60.0  # seconds per measurement at most
DOMAINS = 100


def request_bytes(recipient: str, n: int) -> bytes:
    return (f"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
            f"client_address=198.51.100.{n % 250}\nclient_name=mx{n % 97}.example.net\n"
            f"reverse_client_name=mx{n % 97}.example.net\nhelo_name=mx.example.net\n"
            f"sender=sender{n % 1000}@example.net\nrecipient={recipient}\nrecipient_count=0\n"
            f"queue_id=\ninstance={n:x}.6543a1b2.0\nsize={1000 + n % 50000}\n"
            f"etrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\n"
            f"ccert_subject=\nccert_issuer=\nccert_fingerprint=\nencryption_protocol=TLSv1.3\n"
            f"encryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n"
            f"client_port=4{n % 9999}\npolicy_context=\nserver_address=127.0.0.1\n"
            f"server_port=25\ncompatibility_level=3.6\nmail_version=3.7.11\n\n").encode()


# ---------------------------------------------------------------- store

def build_store(directory: Path, mailboxes: int) -> str:
    url = f"sqlite+aiosqlite:///{directory}/mailpolicy.db"

    async def create() -> None:
        from mailpolicy.store import Store

        store = await Store.open(url)
        await store.close()

    asyncio.run(create())
    now = time.time()
    db = sqlite3.connect(directory / "mailpolicy.db")
    with db:
        db.executemany(
            "INSERT INTO domains (id, name, outbound_ip, default_action, created_at)"
            " VALUES (?, ?, '127.0.0.1', ?, ?)",
            [(d + 1, f"d{d}.example", "reject" if d % 10 else "discard", now)
             for d in range(DOMAINS)])
        db.executemany(
            "INSERT INTO mailboxes (id, domain_id, name, password_hash, max_size, no_save,"
            " enabled, created_at) VALUES (?, ?, ?, '', ?, 0, 1, ?)",
            [(i + 1, i % DOMAINS + 1, f"user{i}", 1 << 30 if i % 10 == 0 else None, now)
             for i in range(mailboxes)])
        db.executemany(
            "INSERT INTO aliases (domain_id, mailbox_id, name) VALUES (?, ?, ?)",
            [(i % DOMAINS + 1, i + 1, f"alias{i}") for i in range(0, mailboxes, 20)])
    db.close()
    return url


def addresses(rng: random.Random, mailboxes: int, count: int) -> list[str]:
    """`count` distinct recipients: 55% mailboxes, 7% mailboxes with case and +ext, 8% aliases,
    20% unknown in our domains, 10% foreign."""
    out = []
    for n, i in enumerate(rng.sample(range(mailboxes), k=min(count, mailboxes))):
        d = f"d{i % DOMAINS}.example"
        roll = rng.random()
        if roll < 0.55:
            out.append(f"user{i}@{d}")
        elif roll < 0.62:
            out.append(f"User{i}+tag{n}@{d.upper()}")
        elif roll < 0.70:
            a = i - i % 20
            out.append(f"alias{a}@d{a % DOMAINS}.example")
        elif roll < 0.90:
            out.append(f"nobody{n}@{d}")
        else:
            out.append(f"someone{n}@elsewhere{n % 50}.example")
    return out


# ---------------------------------------------------------------- servers (child processes)

async def serve_floor(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\n\n")
                writer.write(b"action=DUNNO\n\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


async def serve_policy(port: int, url: str, state: str, workers: int) -> None:
    from mailpolicy import config
    from mailpolicy.runtime import logs
    from mailpolicy.runtime import workers as pool
    from mailpolicy.store import Store

    cfg = config.from_dict({"paths": {"state_dir": state},
                            "listen": {"policy": f"127.0.0.1:{port}"},
                            "limits": {"policy_workers": workers},
                            "store": {"url": url}})
    logs.setup(cfg)  # the production log set-up: a key=value line per decision on stderr
    store = await Store.open(cfg.store_url)
    servers = await pool.start(cfg, store, "policy.server", cfg.limits.policy_workers)
    pool.settle_gc()  # as the daemon does once serving
    print("ready", flush=True)
    await asyncio.Event().wait()
    del servers


# ---------------------------------------------------------------- load client

class Conn(asyncio.Protocol):
    def __init__(self, requests: list[bytes], lat: list[float], done: asyncio.Future[None]):
        self.requests, self.lat, self.done = requests, lat, done
        self.i = 0
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if self.i >= len(self.requests) or time.perf_counter() > self.deadline:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.t0 = time.perf_counter()
        self.transport.write(self.requests[self.i])  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.buf.endswith(b"\n\n"):
            self.lat.append(time.perf_counter() - self.t0)
            self.replies.append(self.buf)
            self.buf = b""
            self.i += 1
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"server hung up after {self.i}"))


async def load(port: int, conns: int, reqs: list[bytes]) -> tuple[float, list[float], list[bytes]]:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    replies: list[bytes] = []
    per = [reqs[i::conns] for i in range(conns)]
    deadline = time.perf_counter() + TIME_CAP
    protos = []
    futures = []
    for part in per:
        fut = loop.create_future()
        futures.append(fut)
        proto = Conn(part, lat, fut)
        proto.replies = replies  # type: ignore[attr-defined]
        proto.deadline = deadline  # type: ignore[attr-defined]
        protos.append(proto)
    t0 = time.perf_counter()
    await asyncio.gather(*(loop.create_connection(lambda p=p: p, "127.0.0.1", port)
                           for p in protos))
    await asyncio.gather(*futures)
    return time.perf_counter() - t0, lat, replies


def scanner() -> str:
    from mailpolicy.policy import protocol

    return "Python (not compiled)" if protocol.fields is protocol.fields_py else "compiled"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_server(kind: str, url: str, state: str, workers: int = 1,
               ) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                             "--url", url, "--state", state, "--workers", str(workers)],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {line!r}")
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (its worker processes), from
    /proc; 0 where there is none."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_load(port: int, conns: int, reqs: list[bytes], pid: int = 0,
             ) -> tuple[float, float, float, int, float]:
    """(requests/s, p50 ms, p99 ms, rejects, server CPU µs per request) of one bounded run."""
    cpu0 = cpu_seconds(pid)
    elapsed, lat, replies = asyncio.run(load(port, conns, reqs))
    cpu = (cpu_seconds(pid) - cpu0) / max(1, len(lat)) * 1e6
    rejects = sum(1 for r in replies if r.startswith(b"action=5"))
    return len(lat) / elapsed, pct(lat, 0.5), pct(lat, 0.99), rejects, cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000, help="per warm run")
    ap.add_argument("--cold-requests", type=int, default=1_500, help="per cold run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per level (median)")
    ap.add_argument("--mailboxes", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=0,
                    help="mailpolicy's limits.policy_workers (default 0: one per core)")
    ap.add_argument("--serve")
    ap.add_argument("--port", type=int)
    ap.add_argument("--url")
    ap.add_argument("--state")
    args = ap.parse_args()
    if args.serve == "floor":
        asyncio.run(serve_floor(args.port))
        return
    if args.serve == "mailpolicy":
        asyncio.run(serve_policy(args.port, args.url, args.state, args.workers))
        return
    rng = random.Random(5)
    results: dict[tuple[str, int, str], list[tuple[float, float, float, int, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mp-bench-policy-") as tmp:
        t0 = time.perf_counter()
        url = build_store(Path(tmp), args.mailboxes)
        runs = args.rounds * len(LEVELS)
        cold_n = min(args.cold_requests, args.mailboxes // (runs + 1))
        print(f"store: {args.mailboxes} mailboxes in {DOMAINS} domains, built in "
              f"{time.perf_counter() - t0:.1f} s; {args.requests} requests per warm run, "
              f"{cold_n} per cold run, {args.rounds} alternating rounds per level; "
              f"mailpolicy with limits.policy_workers = {args.workers} (0: one per core, "
              f"{os.cpu_count()} here), request scanner: {scanner()}")
        working = addresses(rng, args.mailboxes, 2000)
        warm = [request_bytes(rng.choice(working), n) for n in range(args.requests)]
        fresh = addresses(rng, args.mailboxes, cold_n * runs)
        colds = [[request_bytes(r, n) for n, r in enumerate(fresh[k * cold_n:(k + 1) * cold_n])]
                 for k in range(runs)]
        floor, floor_port = run_server("floor", url, tmp)
        ours, ours_port = run_server("mailpolicy", url, tmp, args.workers)
        try:
            # prime every worker's caches with the whole working set: each of 8 connections
            # (spread by the kernel over the worker processes) asks for all of it
            run_load(ours_port, 8, [request_bytes(r, n) for n, r in enumerate(working)
                                    for _ in range(8)])
            for mix in ("warm", "cold"):
                for conns in LEVELS:
                    for _ in range(args.rounds):
                        reqs = warm if mix == "warm" else colds.pop()
                        for kind, proc, port in (("floor", floor, floor_port),
                                                 ("mailpolicy", ours, ours_port)):
                            r = run_load(port, conns, reqs, proc.pid)
                            results.setdefault((mix, conns, kind), []).append(r)
                            print(f"  {mix} conns={conns:<3} {kind:10} {r[0]:9.0f} req/s"
                                  f"  p50 {r[1]:6.2f} ms  p99 {r[2]:6.2f} ms"
                                  f"  server CPU {r[4]:5.0f} µs/req"
                                  f"  ({r[3]} rejected)",
                                  flush=True)
        finally:
            for proc in (floor, ours):
                proc.terminate()
                proc.wait(10)
    print("\nmedians of the rounds:\n| mix | conns | floor req/s | mailpolicy req/s | ratio |"
          " floor p50/p99 ms | mailpolicy p50/p99 ms | server CPU µs/req floor / mailpolicy |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for mix in ("warm", "cold"):
        for conns in LEVELS:
            f, m = ([median([r[i] for r in results[(mix, conns, kind)]]) for i in (0, 1, 2, 4)]
                    for kind in ("floor", "mailpolicy"))
            summary[(mix, conns)] = (m[0] / f[0], m[2])
            print(f"| {mix} | {conns} | {f[0]:.0f} | {m[0]:.0f} | {m[0] / f[0]:.2f}x |"
                  f" {f[1]:.2f} / {f[2]:.2f} | {m[1]:.2f} / {m[2]:.2f} | {f[3]:.0f} / {m[3]:.0f} |")
    ratio, p99 = summary[("warm", 64)]
    print(f"\ntarget at 64 connections (warm): ratio {ratio:.2f}x (>= 0.70), "
          f"p99 {p99:.2f} ms (< 5 ms)")


if __name__ == "__main__":
    main()
