"""Benchmark: store queries per delivered message and per policy request on a node of a
cluster (PostgreSQL store, private server started here).

    .venv/bin/python bench/cluster.py [--messages N] [--requests N] [--mailboxes N]
                                      [--rate-messages N] [--reps 3] [--workers 0] [--quick]

Two nodes n1, n2 in the registry; mailboxes at home on both, half with a quota. Counted:
every SQL statement the store's engine runs (SQLAlchemy cursor events), while
  policy  (node n1): RCPT requests for a working set of recipients (some at home on n2, whose
           usage figure comes from the store), first cold, then warm (as on a real MX where
           recipients recur);
  lookup  (node n1): transport socketmap lookups for the same recipients, cold then warm;
  deliver (node n2): messages delivered by LMTP to mailboxes at home on n2 (the home node also
           writes each mailbox's usage figure to the store).
Each process also polls the directory generation once a second on its LISTEN connection
(outside the engine: not counted here, about 1 query/s per process).

Then the delivery rate with 1 node vs 3 nodes on this machine: three node processes (each
the daemon's LMTP service with `limits.lmtp_workers`, 0 = one per core, as `serve` runs it)
on the one PostgreSQL; each run sends `rate-messages` messages of 2 KB with three
`smtp-source -L` streams at concurrency 3+3+2 (c8 in all), one recipient per stream. With
"1 node" the three recipients are at home on n1 and every stream goes to n1; with "3 nodes"
each recipient is at home on its own node and its stream goes there (as Postfix's transport
table sends it). Runs are interleaved, `reps` times; printed: median [min-max] msgs/s, the
paired ratio, CPU per message of the node processes and of PostgreSQL, and the machine's load
before and after (bench/common.py). Every message is counted in its Maildir afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))


class Counter:
    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        from sqlalchemy import event

        self.n = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, *_args: object) -> None:
        self.n += 1


def cfg_for(node: str, state: Path, url: str, lmtp_port: int):  # type: ignore[no-untyped-def]
    from mailpolicy import config

    return config.from_dict({
        "store": {"url": url}, "paths": {"state_dir": str(state / node)},
        "listen": {"lmtp": f"127.0.0.1:{lmtp_port}"},
        "cluster": {"node": node}, "limits": {"lmtp_workers": 1},
        "log": {"level": "warning"}})


async def provision(store, mailboxes: int) -> list[str]:  # type: ignore[no-untyped-def]
    await store.nodes.add("n1", lmtp="127.0.0.2:24")
    await store.nodes.add("n2", lmtp="127.0.0.3:24")
    await store.create_domain("bench.example")
    out = []
    for i in range(mailboxes):
        addr = f"u{i}@bench.example"
        await store.create_mailbox(addr, node="n1" if i % 2 else "n2",
                                   max_size="100M" if i % 4 < 2 else None)
        out.append(addr)
    return out


async def policy(store, cfg, recipients: list[str], n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from mailpolicy.core.cache import CachedDirectory
    from mailpolicy.maildir.reader import UsageReader
    from mailpolicy.policy.protocol import Parser, encode_request
    from mailpolicy.policy.server import PolicyService
    from mailpolicy.policy.usage import HomeUsage

    counter = Counter(store.engine)
    usage = HomeUsage(UsageReader(cfg.maildir_root), store.nodes.usage, cfg.cluster.node)
    service = PolicyService(cfg.policy, CachedDirectory.for_store(store), usage, 65536)
    parser = Parser()
    reqs = [parser.feed(encode_request({
        "request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
        "sender": "s@example.net", "recipient": recipients[i % len(recipients)],
        "size": "2000", "instance": f"{i:x}"}))[0] for i in range(n)]
    results = []
    for rnd in ("cold", "warm"):
        start = counter.n
        for r in reqs[: len(recipients)] if rnd == "cold" else reqs:
            if service.answer_now(r) is None:
                await service.answer(r)
        count = len(recipients) if rnd == "cold" else n
        results.append((counter.n - start) / count)
    return results[0], results[1]


async def lookups(store, cfg, recipients: list[str], n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from mailpolicy.core.cache import CachedDirectory
    from mailpolicy.socketmap.protocol import encode_query
    from mailpolicy.socketmap.server import SocketmapService

    counter = Counter(store.engine)
    service = SocketmapService(CachedDirectory.for_store(store), 100_000, node=cfg.cluster.node)
    queries = [encode_query("transport", recipients[i % len(recipients)])[:] for i in range(n)]
    results = []
    for rnd in ("cold", "warm"):
        start = counter.n
        batch = queries[: len(recipients)] if rnd == "cold" else queries
        for q in batch:
            payload = q[q.index(b":") + 1:-1]
            await service.answer(payload)
        results.append((counter.n - start) / len(batch))
    return results[0], results[1]


async def deliver(store, cfg, recipients: list[str], n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from mailpolicy.lmtp import server as lmtp

    counter = Counter(store.engine)
    listeners = await lmtp.start(cfg, store)
    port = int(cfg.listen.lmtp.rpartition(":")[2])
    mine = [r for i, r in enumerate(recipients) if i % 2 == 0]  # at home on n2
    msg = b"From: s@example.net\r\nSubject: bench\r\n\r\n" + b"x" * 2000 + b"\r\n"

    def send(count: int) -> None:
        with smtplib.LMTP("127.0.0.1", port) as c:
            for i in range(count):
                c.sendmail("s@example.net", [mine[i % len(mine)]], msg)

    try:
        start, t0 = counter.n, time.perf_counter()
        await asyncio.to_thread(send, n)
        took = time.perf_counter() - t0
        return (counter.n - start) / n, n / took
    finally:
        for s in listeners:
            s.close()
        for s in listeners:
            await s.wait_closed()


async def store_size(url: str, mailboxes: int, domains: int = 10_000) -> tuple[float, float]:
    """(seconds to bulk-load, MiB of the database) with `mailboxes` mailboxes (a realistic
    Argon2 hash each, every tenth with a quota) in `domains` domains, by SQL in PostgreSQL."""
    import sqlalchemy as sa

    from mailpolicy.store import Store

    store = await Store.open(url)
    try:
        t0 = time.perf_counter()
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(
                "INSERT INTO domains (name, created_at) SELECT 'd' || i || '.example', 1.7e9 "
                "FROM generate_series(1, :n) i"), {"n": domains})
            await conn.execute(sa.text(
                "INSERT INTO mailboxes (domain_id, name, password_hash, max_size, created_at, "
                "home_node, used_bytes) SELECT (SELECT min(id) FROM domains) + i % :d, "
                "'user' || i, '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$' || "
                "substr(md5(i::text), 1, 22) || '$' || md5(i || 'h') || substr(md5(i || 'k'), "
                "1, 11), CASE WHEN i % 10 = 0 THEN 1073741824 END, 1.7e9, 'n' || (i % 3 + 1), "
                "i * 1000 FROM generate_series(1, :n) i"), {"n": mailboxes, "d": domains})
            await conn.execute(sa.text("ANALYZE"))
        took = time.perf_counter() - t0
        async with store.engine.connect() as conn:
            size = await conn.scalar(sa.text("SELECT pg_database_size(current_database())"))
        return took, int(size or 0) / 2**20
    finally:
        await store.close()


RATE_DOMAIN = "rate.example"
STREAMS = (3, 3, 2)  # concurrency of the three smtp-source streams: c8 in all


def start_nodes(url: str, work: Path, workers: int) -> dict[str, tuple[subprocess.Popen, int]]:
    """Three LMTP node processes n1..n3 (bench/lmtp.py's server script) on the store."""
    from lmtp import MAILPOLICY_SERVER, BenchError, free_port, wait_port

    nodes = {}
    for name in ("n1", "n2", "n3"):
        port = free_port()
        data = {"store": {"url": url}, "paths": {"state_dir": str(work / name)},
                "listen": {"lmtp": f"127.0.0.1:{port}"}, "cluster": {"node": name},
                "limits": {"lmtp_workers": workers}, "log": {"level": "info"}}
        log = open(work / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-c", MAILPOLICY_SERVER, json.dumps(data)],
                                stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        log.close()
        nodes[name] = (proc, port)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            raise BenchError(f"node {name} did not start (see {work / name}.log)")
        wait_port(port, proc, f"node {name}")
    return nodes


async def pg_connections(url: str) -> int:
    """Connections to the store's database now, other than this one."""
    import sqlalchemy as sa

    from mailpolicy.store import Store

    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            n = await conn.scalar(sa.text("SELECT count(*) FROM pg_stat_activity "
                                          "WHERE datname = current_database()"))
        return int(n or 0) - 1
    finally:
        await store.close()


async def add_rate_mailboxes(url: str, homes: dict[str, str]) -> None:
    from mailpolicy.store import Store

    store = await Store.open(url)
    try:
        if await store.get_domain(RATE_DOMAIN) is None:
            await store.create_domain(RATE_DOMAIN)
            for k in (1, 2, 3):
                await store.nodes.add(f"n{k}", lmtp=f"127.0.0.{k + 1}:24")
        for address, node in homes.items():
            await store.create_mailbox(address, node=node)
    finally:
        await store.close()


def rate_run(url: str, work: Path, nodes: dict[str, tuple[subprocess.Popen, int]],
             pg_pid: int, label: str, rep: int, count: int) -> tuple[float, float, float]:
    """One run: (msgs/s, node CPU ms/msg, PostgreSQL CPU ms/msg); every message counted."""
    from common import tree_cpu
    from lmtp import SMTP_SOURCE, BenchError

    names = [f"{label[0]}r{rep}s{k}" for k in range(len(STREAMS))]
    homes = {n: ("n1" if label == "1 node" else f"n{k + 1}") for k, n in enumerate(names)}
    asyncio.run(add_rate_mailboxes(url, {f"{n}@{RATE_DOMAIN}": h for n, h in homes.items()}))
    time.sleep(1.5)  # every node's directory cache hears of the new mailboxes
    per = [count // len(STREAMS) + (k < count % len(STREAMS)) for k in range(len(STREAMS))]
    procs = [p for p, _ in nodes.values()]
    cpu0, pg0 = sum(tree_cpu(p.pid) for p in procs), tree_cpu(pg_pid)
    t0 = time.perf_counter()
    streams = [subprocess.Popen(
        [SMTP_SOURCE, "-L", "-4", "-d", "-s", str(conc), "-m", str(n), "-l", "2048",
         "-f", "sender@example.net", "-t", f"{name}@{RATE_DOMAIN}", "-M", "bench.client",
         f"127.0.0.1:{nodes[homes[name]][1]}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name, conc, n in zip(names, STREAMS, per, strict=True)]
    for st in streams:
        out, _ = st.communicate(timeout=600)
        if st.returncode:
            raise BenchError(f"smtp-source failed: {out.decode(errors='replace')[-300:]}")
    took = time.perf_counter() - t0
    cpu = (sum(tree_cpu(p.pid) for p in procs) - cpu0) * 1000 / count
    pg_cpu = (tree_cpu(pg_pid) - pg0) * 1000 / count
    for name, n in zip(names, per, strict=True):
        new = work / homes[name] / "mail" / RATE_DOMAIN / name / "Maildir" / "new"
        got = len(list(new.iterdir())) if new.is_dir() else 0
        if got != n:
            raise BenchError(f"{label}: {got} of {n} messages for {name} stored")
    return count / took, cpu, pg_cpu


def delivery_rate(pg, url: str, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """1 node vs 3 nodes, interleaved repetitions, one table (bench/common.py)."""
    from common import Report
    from lmtp import BenchError, tail

    work = Path(tempfile.mkdtemp(prefix="mp-bench-cluster-rate-"))
    report = Report(f"LMTP delivery on a cluster of one PostgreSQL: {args.rate_messages} "
                    f"messages of 2 KB per run, c8 (3 streams: 3+3+2)", anchor="1 node")
    nodes: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        asyncio.run(add_rate_mailboxes(url, {}))  # the schema and nodes, before the nodes start
        nodes = start_nodes(url, work, args.workers)
        for rep in range(args.reps):
            for label in ("1 node", "3 nodes"):
                rate, cpu, pg_cpu = rate_run(url, work, nodes, pg.proc.pid, label, rep,
                                             args.rate_messages)
                report.add("2 KB c8", label, rate, cpu, pg_cpu=pg_cpu)
        conns = asyncio.run(pg_connections(url))
        report.print_table(extra_cols=[("pg_cpu", "PostgreSQL CPU ms/msg", "{:.2f}")])
        print(f"lmtp_workers per node: {args.workers} (0: one per core); cores: "
              f"{os.cpu_count()}; PostgreSQL fsync off (test server); connections to "
              f"PostgreSQL after the runs: {conns} from the 3 nodes' LMTP processes")
    except BenchError as e:
        for log in sorted(work.glob("n*.log")):
            print(f"--- {log.name} (tail) ---\n{tail(log)}", file=sys.stderr)
        raise SystemExit(f"bench/cluster.py failed: {e}") from None
    finally:
        for proc, _ in nodes.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in nodes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--mailboxes", type=int, default=200)
    ap.add_argument("--rate-messages", type=int, default=1200,
                    help="messages per run of the 1 vs 3 nodes delivery rate")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0,
                    help="limits.lmtp_workers of each node (0 = one per core)")
    ap.add_argument("--size-mailboxes", type=int, default=1_000_000,
                    help="mailboxes for the store size figure (0: skip)")
    ap.add_argument("--quick", action="store_true",
                    help="600 messages per rate run, 2000 policy requests")
    args = ap.parse_args()
    if args.quick:
        args.rate_messages, args.requests = min(args.rate_messages, 600), min(
            args.requests, 2000)
    from pgserver import PgServer

    pg = PgServer().start()
    try:
        asyncio.run(queries(pg, args))
        delivery_rate(pg, pg.createdb() + "?ssl=disable", args)
        if args.size_mailboxes:
            took, mib = asyncio.run(store_size(pg.createdb() + "?ssl=disable",
                                               args.size_mailboxes))
            print(f"store size: {args.size_mailboxes} mailboxes in 10000 domains (no aliases): "
                  f"{mib:.0f} MiB in PostgreSQL with indexes (loaded in {took:.0f} s)")
    finally:
        pg.close()


async def queries(pg, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """Store queries per policy request, transport lookup and delivered message."""
    from pgserver import free_port

    from mailpolicy.store import Store

    state = Path(tempfile.mkdtemp(prefix="mp-bench-cluster-"))
    try:
        url = pg.createdb() + "?ssl=disable"
        setup = await Store.open(url)
        recipients = await provision(setup, args.mailboxes)
        await setup.close()
        n1 = cfg_for("n1", state, url, free_port())
        n2 = cfg_for("n2", state, url, free_port())
        from mailpolicy.runtime import logs

        logs.setup(n1)
        s1, s2 = await Store.open(url), await Store.open(url)
        try:
            await asyncio.sleep(0.1)
            p_cold, p_warm = await policy(s1, n1, recipients, args.requests)
            t_cold, t_warm = await lookups(s1, n1, recipients, args.requests)
            d_per, rate = await deliver(s2, n2, recipients, args.messages)
        finally:
            await s1.close()
            await s2.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(f"store queries per policy request:  cold {p_cold:.2f}  warm {p_warm:.3f}  "
          f"({args.mailboxes} recipients, half at home on the other node, half with a quota)")
    print(f"store queries per transport lookup: cold {t_cold:.2f}  warm {t_warm:.3f}")
    print(f"store queries per delivered message (home node): {d_per:.2f}  "
          f"({args.messages} messages of 2 KB, one LMTP connection, {rate:.0f} msgs/s)",
          flush=True)


if __name__ == "__main__":
    main()
