"""The autoresponder driven by the real LMTP server: per-mailbox replies, replies fed back stop."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket

import pytest
from test_autoreply_flow import A, B, human, make_cfg, mb, sink, store  # noqa: F401

from mailpolicy.lmtp import server as lmtp_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lmtp_send(port: int, sender: str, rcpts: list[str], data: bytes) -> list[int]:
    """One LMTP transaction; the code of every per-recipient reply after DATA."""
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo_or_helo_if_needed()
        c.mail(sender)
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        codes = [c.data(data)[0]]
        codes += [c.getreply()[0] for _ in rcpts[1:]]
        return codes


async def wait_count(sink, n: int) -> None:  # noqa: F811
    """Poll (bounded: 5 s) until the sink holds n messages."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while len(sink.messages) < n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)


@pytest.fixture
async def lmtp(tmp_path, sink):  # noqa: F811
    port = _free_port()
    yield make_cfg(tmp_path, sink.port, listen={"lmtp": f"127.0.0.1:{port}"}), port


async def test_lmtp_delivery_triggers_one_reply_per_mailbox(lmtp, store, sink):  # noqa: F811
    cfg, port = lmtp
    servers = await lmtp_server.start(cfg, store)
    try:
        carol = "carol@three.example"
        msg = human(carol, f"{B}, {A}")
        codes = await asyncio.to_thread(lmtp_send, port, carol, [B, "robert@two.example", A], msg)
        assert codes == [250, 250, 250]
        await wait_count(sink, 2)
        await asyncio.sleep(0.2)  # nothing more may come
        assert sorted(m[0] for m in sink.messages) == ["<>", "<>"]
        assert [m[1] for m in sink.messages] == [[carol], [carol]]
        # the replies come back through LMTP (to both mailboxes, as if carol were local and
        # forwarded them): no further reply
        for mail_from, _rcpts, data in list(sink.messages):
            assert await asyncio.to_thread(lmtp_send, port, mail_from, [B, A], data) == [250, 250]
        await asyncio.sleep(0.3)
        assert len(sink.messages) == 2
    finally:
        for s in servers:
            s.close()
        for s in servers:
            await s.wait_closed()
