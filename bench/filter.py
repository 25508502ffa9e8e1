"""End-to-end msgs/s through a private Postfix: mailpolicy's filter vs a pooled pass-through.

    .venv/bin/python bench/filter.py [--count 300] [--conc 8,32] [--reps 3] [--quick]

Run as root (a private Postfix needs it). Uses the e2e harness (tests/e2e/harness.py): Postfix
+ mailpolicy (LMTP, policy, socketmap, filter) on loopback, every mailpolicy at the shipped
default log level (info). Five stacks run side by side:
  pass-through   content_filter -> bench/passthrough.py (persistent next-hop connection per
                 session, no work) -> 10026 -> mailpolicy LMTP: the anchor;
  after-queue    content_filter -> mailpolicy's filter -> 10026 -> LMTP;
  before-queue   smtpd_proxy_filter -> mailpolicy's filter -> LMTP;
  no filter      Postfix -> LMTP (for scale: a filter costs a second queue pass after-queue);
  postfix+dovecot  what a plain Postfix + Dovecot install does, the before-queue target's second
                 anchor: no content filter, proxy filter or policy service, the bench domain and
                 mailbox as static maps, Postfix -> Dovecot LMTP (unix socket, mail_fsync =
                 always, userdb/passdb: SQL on mailpolicy's store, one lookup per recipient, no
                 auth cache) into the same Maildir layout. mailpolicy runs idle beside it (not in
                 the mail path: its CPU is not in the server CPU, only in the mailpolicy column).
For each size, concurrency and repetition the targets run in turn (interleaved): smtp-source
sends `count` messages (half as many at 100 KB) and the clock stops when all are in the
Maildir. Prints median [min-max] msgs/s, the paired ratio to the pass-through, CPU per message
of the whole chain (Postfix + mailpolicy + pass-through process trees; Postfix + Dovecot for
postfix+dovecot) and of mailpolicy's alone, then before-queue / postfix+dovecot paired the same
way, and the machine's load before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

from common import Report, tree_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from harness import Options as StackOptions
from harness import Stack, free_port, plain_postfix_main_cf

HERE = Path(__file__).resolve().parent
INFO = {"log": {"level": "info"}}  # the shipped default (the harness runs at debug)


class Target:
    """One stack (and the pass-through process when it is the anchor); `plain`: Postfix delivers
    to Dovecot's LMTP with no mailpolicy in the path."""

    def __init__(self, name: str, opts: StackOptions, passthrough: bool = False,
                 plain: bool = False) -> None:
        self.name = name
        self.plain = plain
        self.address = f"bench@{re.sub('[^a-z0-9]+', '-', name)}.bench.test"
        if plain:
            opts.dovecot = opts.dovecot_lmtp = True
            opts.main_cf.update(plain_postfix_main_cf([self.address]))
        self.stack = Stack(opts)
        self.extra: subprocess.Popen[str] | None = None
        if passthrough:
            port = free_port()
            self.extra = subprocess.Popen(
                [sys.executable, str(HERE / "passthrough.py"), str(port),
                 str(self.stack.ports["reinject"])], stdout=subprocess.PIPE, text=True)
            assert self.extra.stdout is not None
            if self.extra.stdout.readline().strip() != "READY":
                raise SystemExit("the pass-through filter did not start")
            opts.main_cf["content_filter"] = f"mailpolicy-filter:[127.0.0.1]:{port}"

    def start(self) -> None:
        self.stack.start()
        asyncio.run(self._provision())

    async def _provision(self) -> None:
        async with self.stack.store() as store:
            await store.create_domain(self.address.split("@")[1])
            await store.create_mailbox(self.address)

    def pids(self) -> list[int]:
        """Every server's root pid, mailpolicy's first (Dovecot's last when plain)."""
        mp = self.stack.mailpolicy.proc
        assert mp is not None
        roots = [mp.pid, self.stack.postfix.master_pid() or 0]
        if self.extra is not None:
            roots.append(self.extra.pid)
        if self.plain:
            assert self.stack.dovecot.proc is not None
            roots.append(self.stack.dovecot.proc.pid)
        return roots

    def stop(self) -> None:
        self.stack.stop()
        if self.extra is not None:
            self.extra.terminate()
            self.extra.wait(10)

    def run(self, count: int, size: int, conc: int) -> tuple[float, float, float]:
        """(msgs/s, chain CPU ms/msg, mailpolicy CPU ms/msg) of one bounded run."""
        roots = self.pids()
        before = len(self.stack.messages(self.address))
        cpu0 = [tree_cpu(p) for p in roots]
        t0 = time.monotonic()
        subprocess.run(["/usr/sbin/smtp-source", "-4", "-s", str(conc), "-m", str(count),
                        "-l", str(size), "-f", "bench@outside.example", "-t", self.address,
                        f"127.0.0.1:{self.stack.ports['smtpd']}"], check=True, timeout=600)
        self.stack.wait_maildir(self.address, before + count, timeout=600)
        rate = count / (time.monotonic() - t0)
        used = [tree_cpu(p) - c for p, c in zip(roots, cpu0, strict=True)]
        chain = sum(used[1:]) if self.plain else sum(used)  # plain: mailpolicy is idle
        return rate, chain * 1000 / count, used[0] * 1000 / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=300, help="messages per 2 KB run")
    ap.add_argument("--conc", default="8,32", help="smtp-source sessions")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="concurrency 8, 100 messages")
    args = ap.parse_args()
    if args.quick:
        args.count, args.conc = min(args.count, 100), "8"
    concs = [int(c) for c in args.conc.split(",")]
    sizes = [(2 * 1024, args.count), (100 * 1024, max(20, args.count // 2))]
    no_filter = {"content_filter": "", "receive_override_options": ""}
    targets = [
        Target("pass-through", StackOptions(dovecot=False, mailpolicy=INFO), passthrough=True),
        Target("after-queue", StackOptions(dovecot=False, mailpolicy=INFO)),
        Target("before-queue", StackOptions(dovecot=False, mailpolicy=INFO,
                                            filter_mode="before-queue")),
        Target("no filter", StackOptions(dovecot=False, mailpolicy=INFO,
                                         main_cf=dict(no_filter))),
        Target("postfix+dovecot", StackOptions(mailpolicy=INFO), plain=True),
    ]
    report = Report("end to end through Postfix (msgs/s until all are in the Maildir)",
                    anchor="pass-through")
    started: list[Target] = []
    try:
        for t in targets:
            t.start()
            started.append(t)
        time.sleep(1.5)
        for t in targets:
            t.run(20, 2048, 8)  # warm-up (connections, caches)
        for size, count in sizes:
            for conc in concs:
                for _ in range(args.reps):
                    for t in targets:
                        rate, cpu, mp = t.run(count, size, conc)
                        report.add(f"{size // 1024} KB c{conc}", t.name, rate, cpu, mp=mp)
                print(f"  {size // 1024} KB c{conc} done", flush=True)
    finally:
        for t in targets:
            try:
                t.stop()
            except Exception as e:  # stop the others all the same
                print(f"stopping {t.name}: {e}", file=sys.stderr)
    report.print_table([("mp", "mailpolicy CPU ms/msg", "{:.2f}")])
    print("server CPU: Postfix + mailpolicy + pass-through process trees together "
          "(postfix+dovecot: Postfix + Dovecot; its mailpolicy runs idle, not in the mail path). "
          "targets: after-queue and before-queue >= 1.0x the pass-through")
    report.print_pairs([("before-queue", "postfix+dovecot")])
    print("target: before-queue >= 0.8x postfix+dovecot (plain Postfix -> Dovecot LMTP)")


if __name__ == "__main__":
    main()
