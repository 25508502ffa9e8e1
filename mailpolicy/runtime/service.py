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


class ConfigHolder:
    """The config a service reads per request or session; a reload swaps `current`."""

    def __init__(self, cfg: Config) -> None:
        self.current = cfg


class Reconfigurable:
    """A listener plus the function that applies a reloaded config to the service behind it
    (without closing anything). Everything else is the listener's."""

    def __init__(self, listener: Any, apply: Callable[[Config], None]) -> None:
        self.listener = listener
        self.apply = apply

    def reload(self, cfg: Config) -> None:
        self.apply(cfg)

    def close(self) -> None:
        self.listener.close()

    async def wait_closed(self) -> None:
        await self.listener.wait_closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.listener, name)
