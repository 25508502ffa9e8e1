"""What the runtime knows of a service: a start function returning listeners it can close."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mailpolicy.config import Config, Limits
from mailpolicy.store import Store


class Listener(Protocol):
    """A started listener (asyncio server, worker pool, admin site): close, then wait."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


StartFn = Callable[[Config, Store], Awaitable[Sequence[Listener]]]
"""`start(cfg, store)`: bind and serve in the calling event loop; the started listeners."""


class WorkerStartFn(Protocol):
    """`start(cfg, store, reuse_port=True, inherited=sock)`: the same in a worker process of a
    pool, binding its TCP port with SO_REUSEPORT and accepting on `inherited` as well."""

    def __call__(self, cfg: Config, store: Store, /, *, reuse_port: bool = False,
                 inherited: socket.socket | None = None) -> Awaitable[Sequence[Listener]]: ...


@dataclass(frozen=True)
class Pool:
    """How a service runs as a pool of worker processes: how many (`workers` of the limits; 1
    = in the daemon's loop), the start function of each worker, and `bind_inherited(cfg)`,
    a listener bound once by the pool whose descriptor every worker accepts from."""

    start: WorkerStartFn
    workers: Callable[[Limits], int]
    bind_inherited: Callable[[Config], socket.socket | None] | None = None


@dataclass(frozen=True)
class Service:
    """One protocol service as the daemon starts it: `start(cfg, store)` serves in the calling
    loop; a `pool` service may run in worker processes instead (runtime.workers)."""

    name: str
    start: StartFn
    pool: Pool | None = None

    @classmethod
    def pooled(cls, name: str, start: WorkerStartFn, workers: Callable[[Limits], int],
               bind_inherited: Callable[[Config], socket.socket | None] | None = None,
               ) -> Service:
        """A service that runs in `workers(limits)` processes (started by `start`)."""
        return cls(name, start, Pool(start, workers, bind_inherited))


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
