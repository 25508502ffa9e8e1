"""Directory changes of other processes and nodes on PostgreSQL: every directory write sends a
NOTIFY with the new directory generation; one LISTEN connection per process takes them, and
polls the generation every POLL_INTERVAL as a fallback (a notification lost with its
connection), so every node's lookup caches start afresh within about a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import sqlalchemy as sa
import structlog

log = structlog.get_logger("mailpolicy.store")

CHANNEL = "mailpolicy_directory"
POLL_INTERVAL = 1.0  # seconds between two reads of the generation (the fallback)
RECONNECT_DELAY = 1.0
QUERY_TIMEOUT = 5.0
STALE_AFTER = 3.0  # seconds without a successful read: answer a stamp that moves every second

NOTIFY_SQL = ("UPDATE directory_generation SET generation = generation + 1 "
              "RETURNING generation")


def asyncpg_dsn(url: str) -> str:
    """The libpq-style URL asyncpg.connect takes, from a SQLAlchemy `postgresql+asyncpg` URL
    (SQLAlchemy's `ssl=` query parameter is libpq's `sslmode=`)."""
    u = sa.engine.make_url(url).set(drivername="postgresql")
    if "ssl" in u.query:
        query = dict(u.query)
        query.setdefault("sslmode", query.pop("ssl"))
        u = u.set(query=query)
    return u.render_as_string(hide_password=False)


class GenerationWatcher:
    """The newest directory generation known to this process, kept by a background task.
    `stamp()` never waits; it starts the task on its first call from a running event loop."""

    def __init__(self, url: str) -> None:
        self.dsn = asyncpg_dsn(url)
        self.generation = 0
        self.fresh_at = float("-inf")  # monotonic time of the last successful read
        self.notifications = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None

    def stamp(self) -> object:
        """The cache stamp: the generation while the watcher is healthy; else a value that
        changes every second, so caches keep answers about as long as a TTL would."""
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nobody to watch for
                self._task = asyncio.get_running_loop().create_task(self._run())
        now = time.monotonic()
        if now - self.fresh_at <= STALE_AFTER:
            return self.generation
        return ("stale", int(now))

    def _seen(self, generation: int) -> None:
        self.generation = max(self.generation, generation)
        self.fresh_at = time.monotonic()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        try:
            self._seen(int(payload))
        except ValueError:
            self.generation += 1  # something moved: start afresh anyway

    async def _run(self) -> None:
        import asyncpg

        while True:
            try:
                self._conn = await asyncio.wait_for(asyncpg.connect(self.dsn), QUERY_TIMEOUT)
                await self._conn.add_listener(CHANNEL, self._notified)
                while True:
                    value = await self._conn.fetchval(
                        "SELECT generation FROM directory_generation", timeout=QUERY_TIMEOUT)
                    self._seen(int(value or 0))
                    await asyncio.sleep(POLL_INTERVAL)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("store.generation_watch_failed", error=repr(e))
            finally:
                await self._close_conn()
            await asyncio.sleep(RECONNECT_DELAY)

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), QUERY_TIMEOUT)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_conn()
