"""The filter benchmark's anchor: a pass-through content filter with pooled next-hop connections.

    python bench/passthrough.py LISTEN_PORT NEXT_HOP_PORT

Plain aiosmtpd that only reinjects: same envelope, no XFORWARD, no work. Each client session
keeps one persistent SMTP connection to the next hop (as mailpolicy's filter does) and answers
250 only after the next hop's 250. Prints READY once it listens; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP


class Session(SMTP):
    """One client session and its own connection to the next hop."""

    def __init__(self, next_port: int) -> None:
        self.next_port = next_port
        self.next_hop: aiosmtplib.SMTP | None = None
        super().__init__(self, hostname="passthrough.bench", data_size_limit=200 * 2**20,
                         decode_data=False)

    async def hop(self) -> aiosmtplib.SMTP:
        if self.next_hop is None or not self.next_hop.is_connected:
            self.next_hop = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.next_port,
                                            start_tls=False, timeout=60)
            await self.next_hop.connect()
        return self.next_hop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            hop = await self.hop()
            await hop.sendmail(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
        except Exception as e:  # the client keeps the message and retries
            if self.next_hop is not None:
                self.next_hop.close()
                self.next_hop = None
            return f"451 4.3.0 reinjection failed: {e}"
        return "250 2.0.0 Ok"

    def connection_lost(self, error: Exception | None) -> None:
        if self.next_hop is not None:
            self.next_hop.close()
        super().connection_lost(error)


async def main(port: int, next_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Session(next_port), "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
