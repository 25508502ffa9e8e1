"""Benchmark: the content filter with the DMARC step on vs off, same messages, DNS answered locally.

    .venv/bin/python bench/dmarc.py [--messages N] [--concurrency C] [--rounds R] [--cold-dns]
                                    [--profile DIR] [--quick]

The filter runs in its own process (the real FilterSMTP pipeline: hops, SRS, [dmarc], rewrite,
reinject). This process runs the load (aiosmtplib, XFORWARD ADDR/HELO like Postfix), the reinject
sink and an in-process authoritative DNS server holding SPF, DKIM and DMARC records for 10 sender
domains. Messages (~2 KB) are DKIM-signed (RSA-2048) at start-up and DMARC-aligned. With
--cold-dns the step's DNS cache is off, so every message does all its lookups. Off and on
alternate (interleaved rounds); prints median [min-max] messages/s, the paired ratio on/off,
the filter's CPU per message (with its verification processes) and the machine's load before
and after. The filter runs at the shipped default log level (info). --quick: 300 messages.
--profile DIR runs the filter under cProfile and writes DIR/filter-<off|on>-<round>.prof
(read with `python -m pstats`; figures are then slower and not comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from common import Report, serve_filter, tree_cpu  # noqa: E402

DOMAINS = 10
TIME_CAP = 60.0  # seconds per measurement at most


def build_zone_and_messages(n_domains: int):
    from test_dkim_verify import make_key, sign

    zone: dict[str, list] = {}
    messages = []
    body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 30
    for i in range(n_domains):
        d = f"sender{i}.example"
        pem, txt = make_key()
        zone[f"s1._domainkey.{d}"] = [("TXT", txt)]
        zone[d] = [("TXT", "v=spf1 ip4:198.51.100.0/24 -all"), ("A", "198.51.100.1")]
        zone[f"_dmarc.{d}"] = [("TXT", "v=DMARC1; p=reject")]
        msg = (f"From: User <user@{d}>\r\nTo: bob@local.test\r\nSubject: bench {i}\r\n"
               f"Date: Fri, 27 Nov 2026 06:00:00 +0000\r\nMessage-ID: <{i}@{d}>\r\n\r\n"
               f"{body}").encode()
        messages.append((f"user@{d}", f"mx.{d}", sign(msg, d, "s1", pem)))
    return zone, messages


def make_cfg(state: str, sink: int, dns_port: int, cold: bool, procs: int = 0):
    from mailpolicy import config

    return config.from_dict({
        "paths": {"state_dir": state},
        "reinject": {"host": "127.0.0.1", "port": sink},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout_seconds": 2.0,
                "cache_size": 0 if cold else 10000},
        "dmarc": {"authserv_id": "mx.local.test", "verify_processes": procs},
        "filter": {"hostname": "mx.local.test", "srs_secret": "bench-secret",
                   "srs_domain": "mx.local.test"},
        "log": {"level": "info"},
    })


async def serve(args) -> None:
    import logging

    from mailpolicy.auth.step import DmarcStep
    from mailpolicy.smtp.server import Filter
    from mailpolicy.store import Store

    logging.basicConfig(level=logging.INFO)
    cfg = make_cfg(args.state, args.sink_port, args.dns_port, args.cold_dns,
                   args.verify_processes)
    store = await Store.open(cfg.store_url)
    flt = Filter(cfg, store)  # its steps include the DMARC step
    if args.dmarc == "off":
        flt.pre_steps = [s for s in flt.pre_steps if not isinstance(s, DmarcStep)]
    await serve_filter(flt, args.port_file)
    for step in flt.pre_steps:
        if isinstance(step, DmarcStep):
            step.close()  # the verification worker processes, if any


async def sink_server():
    from aiosmtpd.smtp import SMTP

    class Sink:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Sink.count += 1
            return "250 2.0.0 Ok"

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(Sink(), hostname="sink.test"), "127.0.0.1", 0)
    return srv, Sink


async def load(port: int, messages, total: int, concurrency: int) -> tuple[int, float]:
    import aiosmtplib

    sent = 0
    errors = 0
    t0 = time.monotonic()

    async def worker(w: int) -> None:
        nonlocal sent, errors
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120)
        await c.connect()
        await c.ehlo(hostname="postfix.local.test")
        i = w
        while sent < total and time.monotonic() - t0 < TIME_CAP:
            sender, helo, msg = messages[i % len(messages)]
            i += concurrency
            await c.execute_command(
                f"XFORWARD ADDR=198.51.100.{1 + i % 200} HELO={helo} PROTO=ESMTP".encode())
            _, resp = await c.sendmail(sender, ["bob@local.test"], msg)
            if resp.startswith("2.0.0 Ok") or resp.startswith("Ok") or "2.0.0" in resp:
                sent += 1
            else:
                errors += 1
                if errors > 10:
                    raise RuntimeError(f"filter answered {resp!r}")
        await c.quit()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return sent, time.monotonic() - t0


async def run(args) -> None:
    from test_dmarc_zoneserver import ZoneServer

    from mailpolicy.store import Store

    print("generating keys and signing messages...", flush=True)
    zone, messages = build_zone_and_messages(DOMAINS)
    dns = await ZoneServer(zone).start()
    sink, _ = await sink_server()
    sink_port = sink.sockets[0].getsockname()[1]
    state = tempfile.mkdtemp(prefix="mp-bench-dmarc-")
    cfg = make_cfg(state, sink_port, dns.port, args.cold_dns)
    store = await Store.open(cfg.store_url)
    await store.create_domain("local.test", dmarc=True)
    await store.create_mailbox("bob@local.test", password="bench-password-1")
    await store.close()
    cell = f"c{args.concurrency} {'cold' if args.cold_dns else 'warm'} DNS"
    report = Report(f"content filter, DMARC step off vs on ({args.messages} messages per run,"
                    " ~2 KB, DKIM-signed, aligned)", anchor="dmarc off")
    for rnd in range(args.rounds):
        for mode in ("off", "on"):
            port_file = Path(state) / f"port-{rnd}-{mode}"
            proc = subprocess.Popen(  # noqa: ASYNC220 (started once per round, not timed)
                [sys.executable, __file__, "--serve", "--dmarc", mode, "--state", state,
                 "--sink-port", str(sink_port), "--dns-port", str(dns.port),
                 "--port-file", str(port_file), "--verify-processes", str(args.verify_processes)]
                + (["--cold-dns"] if args.cold_dns else [])
                + (["--profile", str(Path(args.profile) / f"filter-{mode}-{rnd + 1}.prof")]
                   if args.profile else []),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            try:
                for _ in range(300):  # the filter logs every message (to /dev/null here)
                    if port_file.exists() and port_file.read_text():
                        break
                    await asyncio.sleep(0.1)
                port = int(port_file.read_text())
                await load(port, messages, min(50, args.messages), args.concurrency)  # warm-up
                cpu0 = tree_cpu(proc.pid)
                n, secs = await load(port, messages, args.messages, args.concurrency)
                cpu = tree_cpu(proc.pid) - cpu0
            finally:
                proc.terminate()
                proc.wait(10)
            report.add(cell, f"dmarc {mode}", n / secs, cpu * 1000 / n)
        print(f"  round {rnd + 1} done", flush=True)
    report.print_table()
    print("target: dmarc on >= 0.9x off (warm DNS cache)")
    dns.close()
    sink.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold-dns", action="store_true")
    ap.add_argument("--quick", action="store_true", help="300 messages per run")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--dmarc", choices=("on", "off"))
    ap.add_argument("--state")
    ap.add_argument("--sink-port", type=int)
    ap.add_argument("--dns-port", type=int)
    ap.add_argument("--port-file")
    ap.add_argument("--verify-processes", type=int, default=0,
                    help="dmarc.verify_processes for the filter (0 = a thread)")
    ap.add_argument("--profile", help="directory for cProfile output of the filter")
    args = ap.parse_args()
    if args.quick:
        args.messages = min(args.messages, 300)
    if args.serve and args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(asyncio.run, serve(args))
        prof.dump_stats(args.profile)
        return
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args) if args.serve else run(args))


if __name__ == "__main__":
    main()
