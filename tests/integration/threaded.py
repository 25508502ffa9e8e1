"""A service on its own event loop in a thread, for hypothesis tests that talk to it from
synchronous code (one live server shared by all examples)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpolicy import config
from mailpolicy.store import Store

Populate = Callable[[Store], Awaitable[Any]]


@contextlib.contextmanager
def serving(cfg: config.Config, start: Callable[..., Awaitable[list[Any]]], listen: str,
            populate: Populate, ip_pool: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """Open the store, `populate` it, `start(cfg, store)` in a thread; yield (host, port) of the
    `listen` address; close everything afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def setup() -> tuple[Store, list[Any]]:
        store = await Store.open(cfg.store_url, ip_pool=ip_pool or None)
        await populate(store)
        return store, await start(cfg, store)

    store, servers = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)
    try:
        yield config.split_hostport(listen)
    finally:
        async def teardown() -> None:
            for s in servers:
                s.close()
            await store.close()

        asyncio.run_coroutine_threadsafe(teardown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def exchange(addr: tuple[str, int], chunks: list[bytes]) -> bytes:
    """Send `chunks` on one connection, half-close, and return all the server answered (until
    it closed or reset the connection)."""
    with socket.create_connection(addr, timeout=5) as s:
        try:
            for c in chunks:
                s.sendall(c)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may already have hung up on a malformed request
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except ConnectionResetError:
            pass
        return out


def fuzz_live_server(pieces: list[bytes]) -> Callable[[Callable[..., None]], Any]:
    """A hypothesis test over one live server: lists of up to 8 chunks, each one of `pieces`
    or random bytes, 60 examples."""
    def wrap(test: Callable[..., None]) -> Any:
        chunks = st.lists(st.one_of(st.sampled_from(pieces), st.binary(max_size=64)),
                          max_size=8)
        return settings(max_examples=60, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow,
                                               HealthCheck.function_scoped_fixture])(
            given(chunks)(test))
    return wrap
