"""What the runtime knows of a service: a start function returning listeners it can close."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mailpolicy.config import Config, Limits


class Listener(Protocol):
    """A started listener (asyncio server, worker pool, admin site): close, then wait."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


StartFn = Callable[..., Awaitable[list[Any]]]


@dataclass(frozen=True)
class Service:
    """One protocol service as the daemon starts it.

    `start(cfg, store)` serves in the calling loop; a pooled service (`workers` says how many
    processes from `limits`) is also called as `start(cfg, store, reuse_port=True,
    inherited=sock)` in each worker, where `bind_inherited(cfg)` made `sock` once."""

    name: str
    start: StartFn
    workers: Callable[[Limits], int] | None = None
    bind_inherited: Callable[[Config], socket.socket | None] | None = None
