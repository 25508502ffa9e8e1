"""The DATA phase read shared by the LMTP and filter servers: large steps over DataDecoder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .lmtp.stream import TERMINATOR, DataDecoder


async def read_data(reader: asyncio.StreamReader, limit: int, tick: Callable[[], None], *,
                    crlf: bool = False) -> DataDecoder:
    """Read DATA up to the terminating dot line in large steps (never past it, so pipelined
    commands stay in the reader). `crlf`: keep CRLF line ends (see DataDecoder)."""
    decoder = DataDecoder(limit=limit, crlf=crlf)
    while True:
        try:
            chunk = await reader.readuntil(TERMINATOR)
            maybe_end = True
        except asyncio.LimitOverrunError as e:
            chunk = await reader.read(e.consumed)
            maybe_end = False
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("connection closed during DATA") from None
        tick()
        if decoder.feed(chunk, maybe_end):
            return decoder
