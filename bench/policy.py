"""Benchmark: mailpolicy's policy service against a minimal asyncio DUNNO server (the floor).

    .venv/bin/python bench/policy.py [--mailboxes 100000] [--rounds 3] [--quick] [--no-sql]

Builds a temp store (bulk SQL; 1,000,000 mailboxes in seconds), starts the servers as
processes: the floor, mailpolicy as the daemon runs it (`limits.policy_workers` processes,
default one per core, log level info, the in-memory directory) and, unless --no-sql, the same
with `store.directory_in_memory = false` (every new recipient an SQLite lookup: the "before").
At 1, 16 and 64 persistent connections, `rounds` interleaved repetitions (every target in turn
with the same requests), three recipient mixes:
  recurring: drawn from a working set of 2,000 addresses (primed once, as on a real MX);
  new:       every request a distinct recipient (55% mailboxes, 7% with case and +ext,
             8% aliases, 20% unknown in our domains, 10% foreign);
  unknown:   every request a distinct unknown address in our domains.
Prints start-up time and resident memory of each server, then per cell median [min-max] of
requests/s, the paired ratio to the floor, server CPU µs per request (all its processes),
p50/p99 latency, and the machine's load before and after (it is shared: compare ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Report, rss_mib, tree_cpu

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


async def serve_policy(port: int, url: str, state: str, workers: int, memory: bool) -> None:
    from mailpolicy import config
    from mailpolicy.runtime import logs
    from mailpolicy.runtime import workers as pool
    from mailpolicy.services import by_name
    from mailpolicy.store import Store

    cfg = config.from_dict({"paths": {"state_dir": state},
                            "listen": {"policy": f"127.0.0.1:{port}"},
                            "limits": {"policy_workers": workers},
                            "store": {"url": url, "directory_in_memory": memory}})
    logs.setup(cfg)  # the production log set-up: a key=value line per decision on stderr
    store = await Store.open(cfg.store_url)
    servers = await pool.start(cfg, store, by_name("policy"))
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


def run_server(kind: str, url: str, state: str, workers: int = 1, memory: bool = True,
               ) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                             "--url", url, "--state", state, "--workers", str(workers)]
                            + ([] if memory else ["--sql"]),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {line!r}")
    return proc, port


def run_load(port: int, conns: int, reqs: list[bytes], pid: int = 0,
             ) -> tuple[float, float, float, int, float]:
    """(requests/s, p50 ms, p99 ms, rejects, server CPU µs per request) of one bounded run."""
    cpu0 = tree_cpu(pid)
    elapsed, lat, replies = asyncio.run(load(port, conns, reqs))
    cpu = (tree_cpu(pid) - cpu0) / max(1, len(lat)) * 1e6
    rejects = sum(1 for r in replies if r.startswith(b"action=5"))
    return len(lat) / elapsed, pct(lat, 0.5), pct(lat, 0.99), rejects, cpu


def unknowns(rng: random.Random, count: int) -> list[str]:
    """`count` distinct addresses that do not exist, in our domains."""
    return [f"nobody{n}.{rng.randrange(10**9)}@d{n % DOMAINS}.example" for n in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=20_000, help="per recurring run")
    ap.add_argument("--cold-requests", type=int, default=5_000, help="per new/unknown run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--mailboxes", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=0,
                    help="mailpolicy's limits.policy_workers (default 0: one per core)")
    ap.add_argument("--no-sql", action="store_true",
                    help="leave out the run with store.directory_in_memory = false")
    ap.add_argument("--quick", action="store_true", help="1 and 64 connections, fewer requests")
    ap.add_argument("--serve")
    ap.add_argument("--port", type=int)
    ap.add_argument("--url")
    ap.add_argument("--state")
    ap.add_argument("--sql", action="store_true")
    args = ap.parse_args()
    if args.serve == "floor":
        asyncio.run(serve_floor(args.port))
        return
    if args.serve == "mailpolicy":
        asyncio.run(serve_policy(args.port, args.url, args.state, args.workers, not args.sql))
        return
    levels = (1, 64) if args.quick else LEVELS
    if args.quick:
        args.requests, args.cold_requests = args.requests // 4, args.cold_requests // 2
    rng = random.Random(5)
    report = Report(f"policy service, {args.mailboxes} mailboxes (rate: requests/s)",
                    anchor="floor", unit="req/s", cpu_unit="µs/req")
    with tempfile.TemporaryDirectory(prefix="mp-bench-policy-") as tmp:
        t0 = time.perf_counter()
        url = build_store(Path(tmp), args.mailboxes)
        built = time.perf_counter() - t0
        runs = args.rounds * len(levels)
        cold_n = min(args.cold_requests, args.mailboxes // (runs + 1))
        print(f"store: {args.mailboxes} mailboxes in {DOMAINS} domains, built in {built:.1f} s; "
              f"{args.requests} requests per recurring run, {cold_n} per new/unknown run, "
              f"{args.rounds} interleaved rounds; mailpolicy with limits.policy_workers = "
              f"{args.workers} (0: one per core, {os.cpu_count()} here), log level info, "
              f"request scanner: {scanner()}", flush=True)
        working = addresses(rng, args.mailboxes, 2000)
        warm = [request_bytes(rng.choice(working), n) for n in range(args.requests)]
        fresh = addresses(rng, args.mailboxes, cold_n * runs)
        news = [[request_bytes(r, n) for n, r in enumerate(fresh[k * cold_n:(k + 1) * cold_n])]
                for k in range(runs)]
        nobody = unknowns(rng, cold_n * runs)
        unknown = [[request_bytes(r, n) for n, r in enumerate(nobody[k * cold_n:(k + 1) * cold_n])]
                   for k in range(runs)]
        targets: list[tuple[str, subprocess.Popen[str], int]] = []
        try:
            kinds = [("floor", True), ("mailpolicy", True)] + ([] if args.no_sql else
                                                                [("mailpolicy-sql", False)])
            for name, memory in kinds:
                t1 = time.perf_counter()
                proc, port = run_server("floor" if name == "floor" else "mailpolicy", url, tmp,
                                        args.workers, memory)
                time.sleep(0.5)  # the workers settle
                print(f"start-up {name}: ready in {time.perf_counter() - t1:.1f} s, resident "
                      f"memory {rss_mib(proc.pid):.0f} MiB (all its processes)", flush=True)
                targets.append((name, proc, port))
            for _name, _proc, port in targets[1:]:  # every worker's caches: the working set
                run_load(port, 8, [request_bytes(r, n) for n, r in enumerate(working)
                                   for _ in range(8)])
            for mix, lists in (("recurring", None), ("new", news), ("unknown", unknown)):
                k = 0
                for conns in levels:
                    for _ in range(args.rounds):
                        reqs = warm if lists is None else lists[k]
                        k += 1
                        for name, proc, port in targets:
                            r = run_load(port, conns, reqs, proc.pid)
                            report.add(f"{mix} c{conns}", name, r[0], r[4], p50=r[1], p99=r[2])
                print(f"  {mix} done", flush=True)
            for name, proc, _ in targets:
                print(f"resident memory at the end, {name}: {rss_mib(proc.pid):.0f} MiB")
        finally:
            for _, proc, _ in targets:
                proc.terminate()
                proc.wait(10)
    report.print_table([("p50", "p50 ms", "{:.2f}"), ("p99", "p99 ms", "{:.2f}")])
    print("targets: CPU per request within 1.5x of the floor; p99 < 5 ms at 64 connections")


if __name__ == "__main__":
    main()
