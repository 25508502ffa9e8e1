"""End-to-end msgs/s through a private Postfix: LMTP alone, pass-through filter, our filter.

Run as root (a private Postfix needs it): `.venv/bin/python bench/filter.py [--count N] [--conc C]`.
Uses the e2e harness (tests/e2e/harness.py): Postfix + mailpolicy (LMTP, policy, socketmap, filter)
on loopback. smtp-source sends a bounded number of messages; the clock stops when all of them are
in the Maildir. Three set-ups in one run, 2 KB and 100 KB messages, after-queue and before-queue.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from harness import Options as StackOptions
from harness import Stack, free_port


class PassThrough:
    """The floor: plain aiosmtpd that only reinjects (same envelope, no XFORWARD, no work)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            await aiosmtplib.send(envelope.original_content, sender=envelope.mail_from,
                                  recipients=envelope.rcpt_tos, hostname="127.0.0.1",
                                  port=self.port, start_tls=False, timeout=60)
        except Exception as e:  # the client keeps the message and retries
            return f"451 4.3.0 reinjection failed: {e}"
        return "250 2.0.0 Ok"


async def provision(stack: Stack, address: str) -> None:
    async with stack.store() as store:
        await store.create_domain(address.split("@")[1])
        await store.create_mailbox(address)


def run_load(stack: Stack, address: str, count: int, size: int, conc: int) -> float:
    before = len(stack.messages(address))
    t0 = time.monotonic()
    subprocess.run(["/usr/sbin/smtp-source", "-4", "-s", str(conc), "-m", str(count), "-l",
                    str(size), "-f", "bench@outside.example", "-t", address,
                    f"127.0.0.1:{stack.ports['smtpd']}"], check=True, timeout=600)
    stack.wait_maildir(address, before + count, timeout=600)
    return count / (time.monotonic() - t0)


def measure(label: str, opts: StackOptions, sizes: list[tuple[int, int]], conc: int,
            passthrough: bool = False) -> dict[int, float]:
    ctl = None
    stack = Stack(opts)
    if passthrough:
        pport = free_port()
        ctl = Controller(PassThrough(stack.ports["reinject"]), hostname="127.0.0.1",
                         port=pport, data_size_limit=200 * 1024 * 1024)
        ctl.start()
        opts.main_cf["content_filter"] = f"mailpolicy-filter:[127.0.0.1]:{pport}"
    stack.start()
    out: dict[int, float] = {}
    try:
        address = f"bench@{label.replace(' ', '-')}.bench.test"
        asyncio.run(provision(stack, address))
        time.sleep(1.5)
        run_load(stack, address, 20, 2048, conc)  # warm-up (connections, caches)
        for size, count in sizes:
            out[size] = run_load(stack, address, count, size, conc)
            print(f"  {label:<34} {size // 1024:>4} KB: {out[size]:7.1f} msgs/s", flush=True)
    finally:
        stack.stop()
        if ctl is not None:
            ctl.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=400, help="messages per 2 KB run")
    ap.add_argument("--conc", type=int, default=8, help="smtp-source sessions")
    args = ap.parse_args()
    sizes = [(2 * 1024, args.count), (100 * 1024, max(20, args.count // 2))]
    quiet = {"log": {"level": "warning"}}
    no_filter = {"content_filter": "", "receive_override_options": ""}
    runs = {
        "postfix -> lmtp": measure("postfix-lmtp", StackOptions(
            dovecot=False, mailpolicy=quiet, main_cf=dict(no_filter)), sizes, args.conc),
        "postfix -> pass-through -> lmtp": measure("passthrough", StackOptions(
            dovecot=False, mailpolicy=quiet), sizes, args.conc, passthrough=True),
        "postfix -> mailpolicy filter -> lmtp": measure("mailpolicy-after", StackOptions(
            dovecot=False, mailpolicy=quiet), sizes, args.conc),
        "before-queue mailpolicy filter": measure("mailpolicy-before", StackOptions(
            dovecot=False, mailpolicy=quiet, filter_mode="before-queue"), sizes, args.conc),
    }
    floor = runs["postfix -> pass-through -> lmtp"]
    alone = runs["postfix -> lmtp"]
    print(f"\nconcurrency {args.conc}; msgs/s (ratio to pass-through filter, to Postfix alone)")
    for name, res in runs.items():
        cells = "  ".join(f"{s // 1024:>3} KB {v:7.1f} ({v / floor[s]:.2f}x, {v / alone[s]:.2f}x)"
                          for s, v in res.items())
        print(f"{name:<38} {cells}")


if __name__ == "__main__":
    main()
