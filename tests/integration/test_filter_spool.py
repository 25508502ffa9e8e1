"""The filter keeps a big message, or any message past the in-memory count, in a spool file
(issue #14 "Memory") and still relays it byte for byte; nothing is left in the spool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_filter_server import Sink, body_of, close_env, make_env, provision, send, start_sink

pytestmark = pytest.mark.timeout(60)


def big_message(size: int) -> bytes:
    head = (b"From: Alice <alice@sender.test>\r\nTo: bob@ours.test\r\nSubject: big\r\n"
            b"Message-ID: <big@sender.test>\r\n\r\n")
    lines = [b".starts with a dot\r\n", b"..two dots\r\n", b"x" * 900 + b"\r\n", b"\r\n"]
    body = b"".join(lines) * (size // 1000)
    return head + body


async def test_big_message_is_spooled_and_relayed_byte_for_byte(tmp_path: Path) -> None:
    sink = await start_sink(Sink())
    env = await make_env(tmp_path, sink, limits={"filter_spool_threshold": "100K"})
    await provision(env.store)
    try:
        msg = big_message(2_000_000)
        code, _ = await send(env.port, ["bob@ours.test"], msg)
        assert code == 250
        assert body_of(sink.messages[0]) == msg
        spool = env.cfg.state_dir / "spool"
        assert spool.is_dir() and list(spool.iterdir()) == []  # unnamed files only
        flt = env.servers[1].flt  # type: ignore[attr-defined]
        assert flt.memory.in_memory == 0
    finally:
        await close_env(env)


async def test_messages_past_the_in_memory_count_are_spooled(tmp_path: Path) -> None:
    sink = await start_sink(Sink(delay=1.0))  # the first message is held in flight a while
    env = await make_env(tmp_path, sink, limits={"filter_messages_in_memory": 1})
    await provision(env.store)
    flt = env.servers[1].flt  # type: ignore[attr-defined]
    seen: list[tuple[int, bool]] = []
    made = flt.spool_buffer

    def spy():  # type: ignore[no-untyped-def]
        buf = made()
        seen.append((flt.memory.in_memory, buf.spooled))
        return buf

    flt.spool_buffer = spy
    try:
        first = asyncio.create_task(send(env.port, ["bob@ours.test"], big_message(50_000)))
        await asyncio.sleep(0.3)
        second = await send(env.port, ["bob@ours.test"], big_message(50_000))
        assert (await first)[0] == 250 and second[0] == 250
        assert seen == [(1, False), (1, True)]  # the second went to a file
        assert [body_of(m) for m in sink.messages] == [big_message(50_000)] * 2
        assert flt.memory.in_memory == 0
    finally:
        await close_env(env)


async def test_a_spooled_signed_message_verifies(tmp_path: Path) -> None:
    """DKIM reads a spooled message through its mmap, in a thread and in a process pool."""
    import mmap
    from concurrent.futures import ProcessPoolExecutor

    from test_dkim_verify import make_key, message, sign
    from test_dmarc_zoneserver import ZoneServer

    from mailpolicy.auth.dkim import verify_all
    from mailpolicy.auth.dns import Resolver

    pem, txt = make_key()
    signed = sign(message(body="line\r\n" * 20_000), "bank.example", "s1", pem)
    path = tmp_path / "spooled"
    path.write_bytes(signed)
    srv = await ZoneServer({"s1._domainkey.bank.example": [("TXT", txt)]}).start()
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            resolver = Resolver([srv.address], timeout=1.0)
            (r,) = await verify_all(m, resolver)  # type: ignore[arg-type]
            assert r.result == "pass"
            with ProcessPoolExecutor(1) as pool:
                (r,) = await verify_all(m, resolver, executor=pool)  # type: ignore[arg-type]
            assert r.result == "pass"
    finally:
        srv.close()
