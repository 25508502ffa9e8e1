"""Parallel LMTP deliveries to one mailbox never take it past its quota (issue #13: 16
parallel 200 KB messages to a 1 MB mailbox used to store 1.2 MB; here scaled to the test
server's 200 KB size limit: 16 x 20 KB into 100 KB)."""

from __future__ import annotations

import asyncio
import smtplib

from test_lmtp_server import make_env

PARALLEL = 16
BODY = 20 * 1024


async def test_parallel_deliveries_do_not_overshoot_the_quota(tmp_path) -> None:
    e, servers = await make_env(tmp_path)
    try:
        await e.store.create_mailbox("meg@example.test", max_size="100K")
        message = b"Subject: race\r\n\r\n" + (b"x" * 998 + b"\r\n") * (BODY // 1000) + b".\r\n"
        start = asyncio.Event()

        def one() -> int:
            with smtplib.LMTP("127.0.0.1", e.port, timeout=30) as c:
                c.docmd("LHLO", "client.test")
                assert c.docmd("MAIL FROM:<s@remote.test>")[0] == 250  # no SIZE=: no pre-check
                rcpt = c.docmd("RCPT TO:<meg@example.test>")[0]
                if rcpt != 250:  # already full when this one asked
                    return rcpt
                assert c.docmd("DATA")[0] == 354
                c.send(message)
                return c.getreply()[0]

        async def run() -> int:
            await start.wait()
            return await asyncio.to_thread(one)

        tasks = [asyncio.create_task(run()) for _ in range(PARALLEL)]
        start.set()
        codes = await asyncio.gather(*tasks)
        md = e.maildir("meg@example.test")
        stored = sum(p.stat().st_size for p in (md / "new").iterdir())
        assert set(codes) == {250, 552} and codes.count(250) == 5, codes  # 5 x 20.1 KB fit
        assert stored <= 100 * 1024, stored  # at most the quota (before: one message more)
    finally:
        await e.close(servers)
