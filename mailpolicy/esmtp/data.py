"""The DATA phase read shared by the LMTP and filter servers: large steps over DataDecoder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mailpolicy.esmtp.stream import TERMINATOR, DataDecoder, Sink


async def read_data(reader: asyncio.StreamReader, limit: int, tick: Callable[[int], None], *,
                    crlf: bool = False, buffer: Sink | None = None) -> DataDecoder:
    """Read DATA up to the terminating dot line in large steps (never past it, so pipelined
    commands stay in the reader); `tick(n)` after each step of n bytes. `crlf`: keep CRLF
    line ends (see DataDecoder); `buffer`: where the message is written (else the decoder's
    bytearray)."""
    decoder = DataDecoder(limit=limit, crlf=crlf, buffer=buffer)
    while True:
        try:
            chunk = await reader.readuntil(TERMINATOR)
            maybe_end = True
        except asyncio.LimitOverrunError as e:
            chunk = await reader.read(e.consumed)
            maybe_end = False
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("connection closed during DATA") from None
        tick(len(chunk))
        if decoder.feed(chunk, maybe_end):
            return decoder


async def data_command_ok(server: Any, arg: str | None) -> bool:
    """The checks before `354` that LMTP and the filter share: greeted, at least one
    recipient, no argument. Answers the error itself and returns False when DATA may not go on."""
    if await server.check_helo_needed():
        return False
    if not server.envelope.rcpt_tos:
        await server.push("503 5.5.1 Error: need RCPT command")
        return False
    if arg:
        await server.push("501 5.5.4 Syntax: DATA")
        return False
    return True
