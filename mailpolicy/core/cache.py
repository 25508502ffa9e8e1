"""Read-through cache of directory lookups for the services that ask per message or request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from mailpolicy.core.directory import Directory, Resolution, StoreDirectory, resolve
from mailpolicy.core.model import Domain, Mailbox, Node

DEFAULT_TTL = 2.0  # seconds a lookup (hit or miss) is reused when nothing tells us of writes
WATCHED_TTL = 30.0  # ... when the store's directory generation is watched (a backstop only)
STAMP_INTERVAL = 0.1  # seconds between two looks at the store's directory generation
DEFAULT_MAX_ENTRIES = 200_000
_MISSING = object()


class CachedDirectory:
    """A `Directory` over the store that remembers answers (also "no such thing") for `ttl`
    seconds. Everything is forgotten at once when the optional `version()` (the store's
    version, bumped by every directory write in this process) or `stamp()` (the store's
    directory generation, moved by directory writes of any process; looked at every
    STAMP_INTERVAL seconds at most) changes, so the TTL is only a backstop. `synchronous`:
    the store's lookups never wait (see `resolved`). Bounded: the oldest entries go first."""

    def __init__(self, store: Directory, ttl: float = DEFAULT_TTL,
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic,
                 stamp: Callable[[], object] | None = None, *,
                 version: Callable[[], object] | None = None,
                 synchronous: bool = False) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.stamp = stamp
        self.version = version
        self.synchronous = synchronous
        self._stamp_value: object = stamp() if stamp else None
        self._stamped_at = clock()
        self._entries: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._version = self._store_version()
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_store(cls, store: StoreDirectory) -> CachedDirectory:
        """The cache the services use: cleared by the store's own writes; the store's
        directory generation watched where it can be read without waiting (SQLite), so
        directory writes of any process are seen within STAMP_INTERVAL; elsewhere the TTL
        bounds staleness."""
        watched = store.generation() is not None

        def version() -> int:
            return store.version

        return cls(store, ttl=WATCHED_TTL if watched else DEFAULT_TTL,
                   stamp=store.generation if watched else None, version=version,
                   synchronous=store.reads_synchronously)

    def _store_version(self, now: float | None = None) -> object:
        if self.stamp is not None:
            if now is None:
                now = self.clock()
            if now - self._stamped_at >= STAMP_INTERVAL:
                self._stamped_at = now
                self._stamp_value = self.stamp()
        return (self.version() if self.version is not None else None, self._stamp_value)

    def clear(self) -> None:
        self._entries.clear()

    def _get(self, key: tuple[Any, ...]) -> Any:
        now = self.clock()
        version = self._store_version(now)
        if version != self._version:
            self._version = version
            self._entries.clear()
            return _MISSING
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        expires, value = entry
        if expires < now:
            del self._entries[key]
            return _MISSING
        return value

    def _put(self, key: tuple[Any, ...], value: Any, version: object) -> None:
        if version != self._store_version() or self.ttl <= 0:
            return  # a write happened while we asked: do not keep a possibly stale answer
        entries = self._entries
        if len(entries) >= self.max_entries:
            for old in list(entries)[: max(1, self.max_entries // 10)]:
                del entries[old]
        entries[key] = (self.clock() + self.ttl, value)

    async def _cached(self, key: tuple[Any, ...], fetch: Callable[[], Awaitable[Any]]) -> Any:
        value = self._get(key)
        if value is _MISSING:
            self.misses += 1
            version = self._store_version()
            value = await fetch()
            self._put(key, value, version)
        else:
            self.hits += 1
        return value

    async def get_domain(self, name: str) -> Domain | None:
        return await self._cached(("d", name),  # type: ignore[no-any-return]
                                  lambda: self.store.get_domain(name))

    async def find_mailbox(self, domain: str, local: str) -> tuple[Mailbox, bool] | None:
        return await self._cached(("m", domain, local),  # type: ignore[no-any-return]
                                  lambda: self.store.find_mailbox(domain, local))

    async def get_node(self, name: str) -> Node | None:
        """A node of a cluster (the store's get_node), remembered like the lookups."""
        return await self._cached(("n", name),  # type: ignore[no-any-return]
                                  lambda: self.store.get_node(name))  # type: ignore[attr-defined]

    def resolved(self, address: str) -> Resolution | None:
        """resolve() of `address` without waiting: remembered, or worked out now when the
        store answers synchronously (SQLite's read-only connection: its lookups run on the
        event loop anyway, so no task or timer is needed for them); None when an answer
        needs real I/O (then `resolve` is the way)."""
        value = self._get(("r", address))
        if value is not _MISSING:
            self.hits += 1
            return value  # type: ignore[no-any-return]
        if not self.synchronous:
            return None
        self.misses += 1
        version = self._version  # _get() has just looked at the store's version
        coro = resolve(self._inner(), address)
        try:
            coro.send(None)  # runs to the end: nothing in it waits for anything
        except StopIteration as done:
            self._put(("r", address), done.value, version)
            return done.value  # type: ignore[no-any-return]
        coro.close()  # pragma: no cover - it waited after all: the async way answers
        return None

    def _inner(self) -> Directory:
        """What resolve() asks: the store itself when it holds the directory in memory
        (its lookups are not remembered again), else this cache."""
        return self.store if getattr(self.store, "in_memory", False) else self

    async def resolve(self, address: str) -> Resolution:
        """resolve() of the address exactly as given, remembered like the lookups under it
        (over a directory held in memory the lookups under it are not remembered again)."""
        inner = self._inner()
        return await self._cached(("r", address),  # type: ignore[no-any-return]
                                  lambda: resolve(inner, address))
