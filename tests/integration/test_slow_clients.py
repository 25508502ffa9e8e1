"""Slow, idle and too many clients over real sockets (issue #14): LMTP, filter, policy.

Each test reproduces a defect of the old code: stalled LMTP sessions holding every delivery
slot, no bound on connections, trickled DATA and policy requests kept open for ever, and a
filter session left open after the next hop's 421."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from test_filter_server import Sink, close_env, make_env, provision, start_sink

from mailpolicy import config
from mailpolicy.lmtp import server as lmtp
from mailpolicy.policy import server as policy
from mailpolicy.smtp.server import start as start_filter
from mailpolicy.store import Store

pytestmark = pytest.mark.timeout(60)
HOST = "127.0.0.1"
STALLED = 128  # more than limits.max_concurrency (64): the old code blocked every delivery


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Client:
    """A line-level SMTP/LMTP client on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection(HOST, port))

    async def reply(self, wait: float = 10) -> list[bytes]:
        """One (multi-line) reply, its lines without CRLF."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), wait)
            if not line:
                raise ConnectionError(f"closed after {lines!r}")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    async def cmd(self, line: str, wait: float = 10) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        return (await self.reply(wait))[-1]

    async def closed_within(self, seconds: float) -> bytes:
        """Everything the server sends until it closes; fails if it does not within `seconds`."""
        return await asyncio.wait_for(self.reader.read(), seconds)

    def close(self) -> None:
        self.writer.close()


async def lmtp_env(tmp_path: Path, **limits: Any) -> tuple[config.Config, Store, list[Any]]:
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)},
                            "listen": {"lmtp": f"{HOST}:{free_port()}"},
                            "limits": limits})
    store = await Store.open(cfg.store_url)
    await store.create_domain("example.test")
    await store.create_mailbox("alice@example.test")
    return cfg, store, await lmtp.start(cfg, store)


async def close_lmtp(store: Store, servers: list[Any], clients: list[Client]) -> None:
    for c in clients:
        c.close()
    for s in servers:
        s.close()
        await asyncio.wait_for(s.wait_closed(), 10)
    await store.close()


def port_of(cfg: config.Config) -> int:
    return int(cfg.listen.lmtp.rsplit(":", 1)[1])


async def start_transaction(port: int) -> Client:
    c = await Client.connect(port)
    assert (await c.reply())[0].startswith(b"220")
    assert (await c.cmd("LHLO stalled.test")).startswith(b"250")
    assert (await c.cmd("MAIL FROM:<s@example.net>")).startswith(b"250")
    assert (await c.cmd("RCPT TO:<alice@example.test>")).startswith(b"250")
    return c


async def deliver(port: int) -> bytes:
    c = await start_transaction(port)
    try:
        assert (await c.cmd("DATA")).startswith(b"354")
        return await c.cmd("Subject: hi\r\n\r\nhello\r\n.")
    finally:
        c.close()


async def test_stalled_lmtp_sessions_do_not_block_delivery(tmp_path: Path) -> None:
    cfg, store, servers = await lmtp_env(tmp_path)
    port = port_of(cfg)
    stalled: list[Client] = []
    try:
        for _ in range(STALLED):  # LHLO/MAIL/RCPT/DATA, then nothing
            c = await start_transaction(port)
            stalled.append(c)
            c.writer.write(b"DATA\r\n")
        for c in stalled:  # every one of them got its 354 (no slot needed to read a message)
            assert (await c.reply())[0].startswith(b"354")
        t0 = time.monotonic()
        reply = await asyncio.wait_for(deliver(port), 10)
        assert reply.startswith(b"250 2.0.0 <alice@example.test>"), reply
        assert time.monotonic() - t0 < 5
        new = cfg.maildir_root / "example.test" / "alice" / "Maildir" / "new"
        assert len(list(new.iterdir())) == 1
    finally:
        await close_lmtp(store, servers, stalled)


async def test_lmtp_connections_beyond_the_limit_get_421_4_3_2(tmp_path: Path) -> None:
    cfg, store, servers = await lmtp_env(tmp_path, lmtp_max_connections=16)
    port = port_of(cfg)
    clients: list[Client] = []
    try:
        for _ in range(16):
            c = await Client.connect(port)
            clients.append(c)
            assert (await c.reply())[0].startswith(b"220")
        extra = await Client.connect(port)
        clients.append(extra)
        assert (await extra.closed_within(5)).startswith(b"421 4.3.2 ")
        clients[0].writer.write(b"QUIT\r\n")
        await clients[0].closed_within(5)
        await asyncio.sleep(0.1)
        assert (await deliver(port)).startswith(b"250 2.0.0 ")  # room again
    finally:
        await close_lmtp(store, servers, clients)


async def test_lmtp_idle_client_gets_421_4_4_2(tmp_path: Path) -> None:
    cfg, store, servers = await lmtp_env(tmp_path, command_timeout_seconds=1.0)
    c = await start_transaction(port_of(cfg))
    try:
        t0 = time.monotonic()
        assert (await c.closed_within(5)).startswith(b"421 4.4.2 ")
        assert time.monotonic() - t0 < 3
    finally:
        await close_lmtp(store, servers, [c])


async def test_lmtp_trickled_data_is_cut_off(tmp_path: Path) -> None:
    """One byte every 0.1 s keeps a per-read timeout happy for ever; the DATA deadline
    (command timeout, grown by bytes / min_data_rate) ends it."""
    cfg, store, servers = await lmtp_env(tmp_path, command_timeout_seconds=1.5,
                                         min_data_rate=500)
    c = await start_transaction(port_of(cfg))
    try:
        assert (await c.cmd("DATA")).startswith(b"354")
        t0 = time.monotonic()
        got = b""
        for _ in range(100):  # bounded: 10 s of trickling at most
            try:
                c.writer.write(b"x")
                await c.writer.drain()
            except ConnectionError:
                break
            try:
                got += await asyncio.wait_for(c.reader.read(100), 0.1)
            except TimeoutError:
                continue
            if not got or got.endswith(b"\n"):
                break
        assert got.startswith(b"421 4.4.2 "), got
        assert time.monotonic() - t0 < 4
        assert (await deliver(port_of(cfg))).startswith(b"250 ")  # the server is fine
    finally:
        await close_lmtp(store, servers, [c])


async def test_a_fast_large_message_is_not_cut_off_by_the_data_deadline(tmp_path: Path) -> None:
    cfg, store, servers = await lmtp_env(tmp_path, command_timeout_seconds=1.0)
    c = await start_transaction(port_of(cfg))
    try:
        assert (await c.cmd("DATA")).startswith(b"354")
        line = b"y" * 998 + b"\r\n"
        for _ in range(30):  # 30 KB per 0.05 s, 1.5 s in all: longer than the timeout
            c.writer.write(line * 30)
            await c.writer.drain()
            await asyncio.sleep(0.05)
        assert (await c.cmd("\r\n.")).startswith(b"250 2.0.0 ")
    finally:
        await close_lmtp(store, servers, [c])


# ---------------------------------------------------------------- filter
async def test_filter_connections_bounded_and_idle_clients_cut_off(tmp_path: Path) -> None:
    sink = await start_sink(Sink())
    data = {"paths": {"state_dir": str(tmp_path)},
            "listen": {"filter": f"{HOST}:{free_port()}"},
            "reinject": {"host": HOST, "port": sink.port, "timeout_seconds": 2.0},
            "limits": {"filter_max_connections": 4, "command_timeout_seconds": 1.0}}
    cfg = config.from_dict(data)
    store = await Store.open(cfg.store_url)
    servers = await start_filter(cfg, store)
    port = int(cfg.listen.filter.rsplit(":", 1)[1])
    clients = []
    try:
        for _ in range(4):
            c = await Client.connect(port)
            clients.append(c)
            assert (await c.reply())[0].startswith(b"220")
        extra = await Client.connect(port)
        assert (await extra.closed_within(5)).startswith(b"421 4.3.2 ")
        t0 = time.monotonic()
        assert (await clients[0].closed_within(5)).startswith(b"421 4.4.2 ")
        assert time.monotonic() - t0 < 3
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.close()
        assert sink.server is not None
        sink.server.close()
        await store.close()


async def test_filter_closes_its_session_after_the_next_hops_421(tmp_path: Path) -> None:
    sink = await start_sink(Sink(data_reply="421 4.3.2 sink shutting down"))
    e = await make_env(tmp_path, sink)
    await provision(e.store)
    c = await Client.connect(e.port)
    try:
        assert (await c.reply())[0].startswith(b"220")
        assert (await c.cmd("EHLO postfix.test")).startswith(b"250")
        assert (await c.cmd("MAIL FROM:<a@sender.test>")).startswith(b"250")
        assert (await c.cmd("RCPT TO:<bob@ours.test>")).startswith(b"250")
        assert (await c.cmd("DATA")).startswith(b"354")
        reply = await c.cmd("Subject: x\r\n\r\nhi\r\n.")
        assert reply.startswith(b"421 4.3.2 "), reply
        assert await c.closed_within(5) == b""  # closed after the 421, nothing more said
    finally:
        c.close()
        await close_env(e)


# ---------------------------------------------------------------- policy
async def policy_env(tmp_path: Path, **limits: Any) -> tuple[int, Store, list[Any]]:
    port = free_port()
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)},
                            "listen": {"policy": f"{HOST}:{port}"}, "limits": limits})
    store = await Store.open(cfg.store_url)
    return port, store, await policy.start(cfg, store)


REQUEST = (b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
           b"recipient=x@elsewhere.test\n\n")


async def test_policy_client_trickling_a_request_is_cut_off(tmp_path: Path) -> None:
    port, store, servers = await policy_env(tmp_path, policy_request_timeout_seconds=1.0)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(REQUEST)  # a whole request is answered as always
        assert await asyncio.wait_for(reader.readline(), 5) == b"action=DUNNO\n"
        await asyncio.wait_for(reader.readline(), 5)
        t0 = time.monotonic()
        writer.write(b"request=smtpd_access_policy\n")
        closed = False
        for _ in range(100):  # bounded: 10 s of trickling at most
            try:
                writer.write(b"x")
                await writer.drain()
                closed = await asyncio.wait_for(reader.read(1), 0.1) == b""
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
            if closed:
                break
        assert closed and time.monotonic() - t0 < 3
    finally:
        writer.close()
        for s in servers:
            s.close()
        await store.close()


async def test_policy_connections_beyond_the_limit_are_closed(tmp_path: Path) -> None:
    port, store, servers = await policy_env(tmp_path, policy_max_connections=3)
    conns = [await asyncio.open_connection(HOST, port) for _ in range(4)]
    try:
        reader, writer = conns[3]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed unanswered
        reader, writer = conns[0]
        writer.write(REQUEST)
        assert await asyncio.wait_for(reader.readline(), 5) == b"action=DUNNO\n"
        conns[1][1].close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(HOST, port)
        conns.append((reader, writer))
        writer.write(REQUEST)
        assert await asyncio.wait_for(reader.readline(), 5) == b"action=DUNNO\n"
    finally:
        for _, w in conns:
            w.close()
        for s in servers:
            s.close()
        await store.close()
