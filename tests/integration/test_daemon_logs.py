"""`mailpolicy serve` at the default log level writes what an admin needs to see: the DMARC
enforcement line (with the queue id) and an unexpected exception with its type and traceback.
The real daemon, a real store and a local DNS server; its stderr is read."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_daemon_serve import free_port
from test_dmarc_zoneserver import ZoneServer

from mailpolicy.store import Store

SERVE = [sys.executable, "-c", "import sys; from mailpolicy.runtime.daemon import run; "
         "sys.exit(run(sys.argv[1]))"]
HOST = "127.0.0.1"
WAIT = 60.0  # seconds for a line to appear (start-up under load is slow)


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    ports: dict[str, int]
    state: Path
    lines: list[str]

    async def wait_for(self, text: str) -> str:
        """The first output line containing `text` (read as it comes, for WAIT seconds)."""
        async with asyncio.timeout(WAIT):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                assert self.proc.stdout is not None
                raw = await self.proc.stdout.readline()
                if not raw:
                    pytest.fail(f"daemon exited without {text!r}:\n" + "".join(self.lines))
                self.lines.append(raw.decode("utf-8", "replace"))


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    dns = await ZoneServer({"_dmarc.bank.example": [("TXT", "v=DMARC1; p=reject")]}).start()
    state = tmp_path / "state"
    state.mkdir()
    store = await Store.open(f"sqlite+aiosqlite:///{state}/mailpolicy.db")
    await store.create_domain("on.test", dmarc=True)
    await store.close()
    ports = {n: free_port() for n in ("policy", "socketmap", "filter", "lmtp")}
    listen = "\n".join(f'{n} = "{HOST}:{p}"' for n, p in ports.items())
    conf = tmp_path / "mailpolicy.toml"
    conf.write_text(f'[listen]\n{listen}\n[paths]\nstate_dir = "{state}"\n'
                    f'[filter]\nmode = "before-queue"\n'
                    f'[limits]\npolicy_workers = 1\nlmtp_workers = 1\n'  # no worker processes
                    # lookups through SQLite, so the broken table below reaches a lookup
                    f'[store]\ndirectory_in_memory = false\n'
                    f'[dns]\nnameservers = ["{dns.address}"]\ntimeout_seconds = 1.0\n')
    # no [log]: the default level and format
    proc = await asyncio.create_subprocess_exec(*SERVE, str(conf), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    d = Daemon(proc, ports, state, [])
    try:
        await d.wait_for("daemon.ready")
        yield d
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        dns.close()


async def smtp(port: int, commands: list[bytes]) -> list[bytes]:
    """One reply line per command after EHLO (a raw client: XFORWARD is ours to send)."""
    r, w = await asyncio.open_connection(HOST, port)
    try:
        await r.readline()
        w.write(b"EHLO postfix.test\r\n")
        await w.drain()
        while not (await r.readline()).startswith(b"250 "):
            pass
        replies = []
        for c in commands:
            w.write(c)
            await w.drain()
            replies.append(await r.readline())
        return replies
    finally:
        w.close()


async def test_enforcement_and_tracebacks_are_written_at_the_default_level(
        daemon: Daemon) -> None:
    # DMARC: a forged From of a p=reject domain, refused before the queue, logged at info
    message = (b"From: CEO <ceo@bank.example>\r\nTo: <x@on.test>\r\n"
               b"Subject: wire the money\r\n\r\nnow\r\n.\r\n")
    replies = await smtp(daemon.ports["filter"], [
        b"XFORWARD ADDR=203.0.113.5 HELO=forger.example IDENT=4XqTz1abc\r\n",
        b"MAIL FROM:<ceo@bank.example>\r\n", b"RCPT TO:<x@on.test>\r\n", b"DATA\r\n",
        message, b"QUIT\r\n"])
    assert replies[4].startswith(b"550 5.7.1"), replies
    line = await daemon.wait_for("event='dmarc.enforced'")
    for part in ("queue_id='4XqTz1abc'", "result='fail'", "policy='reject'",
                 "header_from='bank.example'", "action='reject'", "level='info'"):
        assert part in line, line

    # the database breaks under the running daemon: a lookup fails in a way no rule expects
    with sqlite3.connect(daemon.state / "mailpolicy.db") as db:
        db.execute("ALTER TABLE domains RENAME TO domains_gone")
    r, w = await asyncio.open_connection(HOST, daemon.ports["socketmap"])
    try:
        w.write(b"18:domains other.test,")
        await w.drain()
        assert await r.readuntil(b",") == b"18:TEMP lookup failed,"
    finally:
        w.close()
    line = await daemon.wait_for("event='socketmap.lookup_failed'")
    assert "exception='Traceback (most recent call last):\\n" in line, line
    assert "sqlite3.OperationalError: no such table: domains" in line, line
    assert "exc_info" not in line
