"""Benchmark: store queries per delivered message and per policy request on a node of a
cluster (PostgreSQL store, private server started here).

    .venv/bin/python bench/cluster.py [--messages N] [--requests N] [--mailboxes N]

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
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))


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


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--mailboxes", type=int, default=200)
    args = ap.parse_args()
    from pgserver import PgServer, free_port

    from mailpolicy.store import Store

    pg = PgServer().start()
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
        pg.close()
    print(f"store queries per policy request:  cold {p_cold:.2f}  warm {p_warm:.3f}  "
          f"({args.mailboxes} recipients, half at home on the other node, half with a quota)")
    print(f"store queries per transport lookup: cold {t_cold:.2f}  warm {t_warm:.3f}")
    print(f"store queries per delivered message (home node): {d_per:.2f}  "
          f"({args.messages} messages of 2 KB, one LMTP connection, {rate:.0f} msgs/s)")


if __name__ == "__main__":
    asyncio.run(main())
