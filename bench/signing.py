"""Benchmark: the submission (originating) filter with DKIM signing vs without, same messages.

    .venv/bin/python bench/signing.py [--messages N] [--concurrency C] [--rounds R] [--ed25519]

The originating filter runs in its own process (the real FilterSMTP pipeline of
listen.filter_originating: hops, From/owner check, rewrite, SRS, dkim-sign, reinject, before-queue:
one message per connection, as Postfix's smtpd_proxy_filter uses it). This process runs the load
(aiosmtplib) and the reinjection sink. Two domains in the same store: `signed.bench.test` has a
DKIM key (RSA 2048, with --ed25519 also Ed25519: dual-signed), `plain.bench.test` has none, so
the only difference is the signing. ~2 KB messages. Rounds alternate plain/signed; prints
messages/s and the ratio of the medians (target >= 0.7). Bounded: --messages per measurement and
at most TIME_CAP seconds each.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import Report, serve_filter, tree_cpu  # noqa: E402

TIME_CAP = 60.0  # seconds per measurement at most
BODY = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n" * 26


def make_cfg(state: str, sink: int, ed25519: bool):
    from mailpolicy import config

    return config.from_dict({
        "paths": {"state_dir": state},
        "reinject": {"host": "127.0.0.1", "port": sink},
        "filter": {"hostname": "mx.bench.test", "srs_domain": "mx.bench.test",
                   "srs_secret": "bench-secret"},
        "dkim": {"ed25519": ed25519},
        "outbound": {"ip_pool": ["127.0.0.1"]},
        "log": {"level": "warning"},
    })


def message(sender: str, i: int) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: bob@remote.test\r\nSubject: bench {i}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{i}.{time.time()}@bench>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{BODY}").encode()


async def serve(args) -> None:
    import logging

    from mailpolicy.runtime import logs
    from mailpolicy.smtp.server import Filter
    from mailpolicy.store import Store

    logging.basicConfig(level=logging.WARNING)
    cfg = make_cfg(args.state, args.sink_port, args.ed25519)
    logs.setup(cfg)
    store = await Store.open(cfg.store_url, ip_pool=("127.0.0.1",))
    flt = Filter(cfg, store, originating=True)
    await serve_filter(flt, args.port_file)
    await store.close()


async def sink_server():
    from aiosmtpd.smtp import SMTP

    class Sink:
        signed = 0

        async def handle_DATA(self, server, session, envelope):
            if envelope.original_content.startswith(b"DKIM-Signature:"):
                Sink.signed += 1
            return "250 2.0.0 Ok"

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(Sink(), hostname="sink.test"), "127.0.0.1", 0)
    return srv, Sink


async def load(port: int, sender: str, total: int, concurrency: int) -> tuple[int, float]:
    import aiosmtplib

    sent = 0
    t0 = time.monotonic()
    messages = [message(sender, i) for i in range(64)]

    async def worker(w: int) -> None:
        nonlocal sent
        i = w
        while sent < total and time.monotonic() - t0 < TIME_CAP:
            c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
            await c.connect()
            await c.ehlo(hostname="submission.bench.test")
            _, resp = await c.sendmail(sender, ["bob@remote.test"], messages[i % len(messages)])
            if "2.0.0" not in resp and not resp.startswith("Ok"):
                raise RuntimeError(f"filter answered {resp!r}")
            sent += 1
            i += concurrency
            await c.quit()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return sent, time.monotonic() - t0


async def run(args) -> None:
    from mailpolicy.auth import dkimkeys
    from mailpolicy.store import Store

    sink, counter = await sink_server()
    sink_port = sink.sockets[0].getsockname()[1]
    state = tempfile.mkdtemp(prefix="mp-bench-signing-")
    cfg = make_cfg(state, sink_port, args.ed25519)
    store = await Store.open(cfg.store_url, ip_pool=("127.0.0.1",))
    for d in ("signed.bench.test", "plain.bench.test"):
        await store.create_domain(d)
        await store.create_mailbox(f"alice@{d}", password="bench-password-1")
    await dkimkeys.make_keys(cfg, store, "signed.bench.test")
    await store.close()
    port_file = Path(state) / "port"
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not timed)
        [sys.executable, __file__, "--serve", "--state", state, "--sink-port", str(sink_port),
         "--port-file", str(port_file), *(["--ed25519"] if args.ed25519 else [])])
    try:
        for _ in range(300):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text())
        await load(port, "alice@signed.bench.test", 20, 2)  # warm-up (key parse, caches)
        keys = "RSA 2048 + Ed25519" if args.ed25519 else "RSA 2048"
        report = Report(f"submission filter, DKIM signing ({keys}) off vs on: {args.messages} "
                        f"messages per run, c{args.concurrency}", anchor="not signed")
        cell = f"c{args.concurrency} {keys}"
        for _ in range(args.rounds):
            for mode, target in (("plain", "not signed"), ("signed", "signed")):
                before, cpu0 = counter.signed, tree_cpu(proc.pid)
                n, secs = await load(port, f"alice@{mode}.bench.test", args.messages,
                                     args.concurrency)
                signed = counter.signed - before
                assert (signed == n) if mode == "signed" else (signed == 0), (mode, signed, n)
                report.add(cell, target, n / secs, (tree_cpu(proc.pid) - cpu0) * 1000 / n)
            print(f"  round {len(report.cells[cell][target].rates)} done", flush=True)
    finally:
        proc.terminate()
        proc.wait(15)
        sink.close()
    report.print_table()
    print("server CPU: the filter process. target: signed >= 0.7x not signed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ed25519", action="store_true", help="dual-sign RSA + Ed25519")
    p.add_argument("--quick", action="store_true", help="150 messages per run")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--sink-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.messages = min(args.messages, 150)
    asyncio.run(serve(args) if args.serve else run(args))


if __name__ == "__main__":
    main()
