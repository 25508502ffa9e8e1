"""Thin asyncio socketmap server: netstring queries in, OK/NOTFOUND/TEMP replies out."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from mailpolicy.config import Config, split_hostport
from mailpolicy.core.cache import CachedDirectory
from mailpolicy.core.directory import Directory, StoreDirectory
from mailpolicy.core.srs import Srs
from mailpolicy.runtime.logs import unexpected
from mailpolicy.runtime.service import Listener, Reconfigurable
from mailpolicy.runtime.timers import IdleTimer
from mailpolicy.socketmap.maps import SrsReverser, lookup
from mailpolicy.socketmap.protocol import Parser, ProtocolError, Reply, parse_query, temp
from mailpolicy.store import snapshot

log = structlog.get_logger("mailpolicy.socketmap")

READ_SIZE = 64 * 1024
IDLE_TIMEOUT = 120.0  # Postfix drops idle socketmap connections after 10 s itself
DEADLINE = 10.0  # seconds for one lookup; Postfix waits 100 s


class SocketmapService:
    """Answers socketmap queries on persistent connections; any error is a TEMP reply."""

    def __init__(self, directory: Directory, max_request: int,
                 deadline: float = DEADLINE, srs: SrsReverser | None = None,
                 node: str = "") -> None:
        if not isinstance(directory, CachedDirectory):
            directory = CachedDirectory(directory, ttl=0)  # uncached
        self.directory = directory
        self.max_request = max_request
        self.deadline = deadline
        self.srs = srs
        self.node = node  # this host's node of a cluster ("" = none)

    async def answer(self, payload: bytes) -> Reply:
        try:
            query = parse_query(payload)
        except ProtocolError as e:
            log.warning("socketmap.bad_query", error=str(e))
            return temp("malformed query")
        try:
            async with asyncio.timeout(self.deadline):
                reply = await lookup(self.directory, query, self.srs, self.node)
        except Exception as e:
            log.warning("socketmap.lookup_failed", map=query.name, key=query.key,
                        error="timeout" if isinstance(e, TimeoutError) else repr(e),
                        exc_info=unexpected(e))
            return temp("lookup failed")
        log.debug("socketmap.lookup", map=query.name, key=query.key, status=reply.status,
                  data=reply.data)
        return reply

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = Parser(self.max_request)
        peer = writer.get_extra_info("peername")
        idle = IdleTimer(IDLE_TIMEOUT, writer.transport.abort)
        try:
            while True:
                data = await reader.read(READ_SIZE)
                idle.touch()
                if not data:
                    break
                payloads = parser.feed(data)
                for payload in payloads:
                    writer.write((await self.answer(payload)).encode())
                if parser.error is not None:
                    log.warning("socketmap.framing_error", peer=peer,
                                error=str(parser.error))
                    writer.write(temp("malformed netstring").encode())
                    await writer.drain()
                    break
                if payloads:
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("socketmap.connection_failed", peer=peer)
        finally:
            idle.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def start(cfg: Config, store: StoreDirectory) -> list[Listener]:
    """Bind cfg.listen.socketmap and serve; returns the servers (the daemon closes them).
    Lookups are answered from the in-memory directory where the store has one (SQLite)."""
    memory = await snapshot.for_store(store) if cfg.store.directory_in_memory else None
    service = SocketmapService(CachedDirectory.for_store(memory or store),
                               int(cfg.limits.socketmap_request_max), srs=Srs.from_config(cfg),
                               node=cfg.cluster.node)
    host, port = split_hostport(cfg.listen.socketmap, "listen.socketmap")
    server = await asyncio.start_server(service.handle, host, port, reuse_address=True)

    def apply(new: Config) -> None:  # per connection (size limit) and per query (SRS)
        service.max_request = int(new.limits.socketmap_request_max)
        service.srs = Srs.from_config(new)

    started: list[Listener] = [Reconfigurable(server, apply)]
    return [*started, memory] if memory is not None else started
