"""LMTP server (RFC 2033): aiosmtpd subclass with streaming DATA and per-recipient replies."""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiosmtpd.smtp import Envelope, Session

from mailpolicy import autoreply
from mailpolicy.autoreply import MailStore
from mailpolicy.config import Config, split_hostport
from mailpolicy.core import replies
from mailpolicy.core.cache import CachedDirectory
from mailpolicy.core.directory import Directory, resolve
from mailpolicy.core.replies import Reply
from mailpolicy.esmtp.adapter import ConnectionLimit, LMTPServerBase, Timeouts
from mailpolicy.esmtp.data import data_command_ok
from mailpolicy.lmtp.deliver import (
    Target,
    deliver_one,
    quarantine_verdict,
    rcpt_decision,
    rcpt_quota_check,
)
from mailpolicy.lmtp.usage_report import report_usage
from mailpolicy.runtime.logs import unexpected
from mailpolicy.runtime.service import Listener as Started
from mailpolicy.runtime.service import Reconfigurable
from mailpolicy.runtime.sockets import clear_stale_socket

log = structlog.get_logger("mailpolicy.lmtp")

READ_LIMIT = 64 * 1024  # StreamReader limit: how much DATA one read step may buffer
CACHE_TTL = 2.0  # seconds the set of enabled autoresponders is reused
IO_THREADS_MAX = 64  # file I/O threads (fsync waits in parallel, like Dovecot's processes)
SOCKET_MODE = 0o660

# a plain <dot-atom@domain> path (UTF-8 allowed): parsed without the email header parser
_PLAIN_PATH = re.compile(r"<([\w!#$%&'*+/=?^`{|}~.-]+@[\w.-]+)>(.*)\Z", re.S)

AutoreplyHook = Callable[..., Awaitable[Any]]


class LMTPEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[Target] = []
        self.declared_size = 0


class LMTPHandler:
    """aiosmtpd hooks: MAIL, RCPT (resolve + decision + quota pre-check) and DATA delivery."""

    def __init__(self, cfg: Config, store: MailStore, directory: Directory | None = None,
                 ) -> None:
        self.cfg = cfg
        self.store = store
        self.directory: Directory = directory or CachedDirectory.for_store(store)
        self.autoreply: AutoreplyHook = autoreply.on_delivered
        self.slots = asyncio.Semaphore(max(1, cfg.limits.max_concurrency))
        self.executor = ThreadPoolExecutor(
            max_workers=max(4, min(IO_THREADS_MAX, cfg.limits.max_concurrency)),
            thread_name_prefix="lmtp-io")
        self._active: tuple[object, float, set[int] | None] = (None, 0.0, None)
        self.connections: set[LMTPServer] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # session tasks, until they are done

    async def handle_MAIL(self, server: LMTPServer, session: Session, envelope: LMTPEnvelope,
                          address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        for opt in mail_options:
            if opt.startswith("SIZE=") and opt[5:].isdigit():
                envelope.declared_size = int(opt[5:])
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: LMTPServer, session: Session, envelope: LMTPEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        try:
            res = await resolve(self.directory, address)
            decision = rcpt_decision(self.cfg, address, res)
            if isinstance(decision, Reply):
                log.info("lmtp.rcpt_refused", rcpt=address, reply=str(decision))
                return str(decision)
            if decision.maildir is not None and decision.mailbox is not None \
                    and decision.mailbox.max_size is not None:
                full = await self.run_io(rcpt_quota_check, self.cfg, decision,
                                         envelope.declared_size)
                if full is not None:
                    log.info("lmtp.rcpt_refused", rcpt=address, reply=str(full))
                    return str(full)
        except Exception as e:
            reply = replies.from_exception(e)
            log.warning("lmtp.rcpt_error", rcpt=address, reply=str(reply), error=repr(e),
                        exc_info=unexpected(e))
            return f"{reply.code} {reply.dsn} <{address}> {reply.text}"
        envelope.rcpt_tos.append(address)
        envelope.targets.append(decision)
        return "250 2.1.5 Ok"

    async def run_io(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run blocking file I/O in the LMTP I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(func, *args))

    async def active_autoresponders(self) -> set[int]:
        """Ids of mailboxes with an enabled autoresponder (for CACHE_TTL; any store write of
        this process clears it)."""
        version = self.store.version
        cached_version, expires, ids = self._active
        if ids is not None and cached_version == version and expires > time.monotonic():
            return ids
        ids = await self.store.autoreplies.active()
        if self.store.version == version:
            self._active = (version, time.monotonic() + CACHE_TTL, ids)
        return ids

    async def handle_exception(self, error: Exception) -> str:
        log.error("lmtp.session_error", error=repr(error), exc_info=error)
        return str(replies.TEMP_FAILURE)

    async def deliver_all(self, envelope: LMTPEnvelope, message: bytearray) -> list[Reply]:
        """Deliver to every accepted recipient (one copy per distinct mailbox, in parallel
        threads) and return one reply per RCPT, in RCPT order."""
        quarantine = quarantine_verdict(message) is not None
        sender = envelope.mail_from or ""
        unique: dict[object, Target] = {}
        for t in envelope.targets:
            unique.setdefault(t.key if t.key is not None else id(t), t)
        keys = list(unique)
        results = await asyncio.gather(*(
            self.run_io(deliver_one, self.cfg, unique[k], sender, message, quarantine)
            for k in keys))
        by_key = dict(zip(keys, results, strict=True))
        return [by_key[t.key if t.key is not None else id(t)] for t in envelope.targets]

    async def after_delivery(self, envelope: LMTPEnvelope, message: bytearray,
                             result: list[Reply]) -> None:
        """The autoresponder hook, for each distinct mailbox that got 250 and has an enabled
        autoresponder; never raises."""
        try:
            active = await self.active_autoresponders()
        except Exception as e:
            log.warning("lmtp.autoreply_lookup_failed", error=repr(e))
            active = None
        done: set[object] = set()
        data: bytes | None = None
        for t, r in zip(envelope.targets, result, strict=True):
            if t.mailbox is None or not r.ok or t.key in done:
                continue
            if active is not None and t.mailbox.id not in active:
                continue
            done.add(t.key)
            if data is None:
                data = bytes(message)
            try:
                await self.autoreply(self.cfg, self.store, t.mailbox, envelope.mail_from or "",
                                     data)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("lmtp.autoreply_failed", mailbox=t.mailbox.address, error=repr(e))


class LMTPServer(LMTPServerBase):
    """One LMTP connection. DATA is read in large chunks into one LF-normalised buffer and
    answered with one reply per accepted recipient, in order (also for 552 and bare LF). A
    delivery slot is taken only once the message is read, for the delivery itself."""

    line_length_limit = READ_LIMIT
    event_handler: LMTPHandler

    def __init__(self, handler: LMTPHandler, cfg: Config, hostname: str,
                 connection_limit: ConnectionLimit | None = None) -> None:
        super().__init__(handler, hostname=hostname, ident="mailpolicy LMTP",
                         data_size_limit=cfg.internal_size_limit,
                         enable_SMTPUTF8=True, decode_data=False,
                         timeouts=Timeouts.from_config(cfg), connection_limit=connection_limit)
        self.command_size_limits = collections.defaultdict(
            lambda: self.command_size_limit, {"MAIL": 1024, "RCPT": 1024})

    def new_envelope(self) -> LMTPEnvelope:
        return LMTPEnvelope()

    def parse_path(self, arg: str) -> tuple[str | None, str | None]:
        m = _PLAIN_PATH.match(arg.lstrip()) if arg else None
        if m is not None:
            return m.group(1), m.group(2)
        return super().parse_path(arg)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.refused:
            return
        self.event_handler.connections.add(self)
        task = self.session_task
        if task is not None and not task.done():
            tasks = self.event_handler.tasks
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.connections.discard(self)
        super().connection_lost(error)

    async def check_helo_needed(self, helo: str = "LHLO") -> bool:
        assert self.session is not None
        if not self.session.host_name:
            await self.push("503 5.5.1 Error: send LHLO first")
            return True
        return False

    async def smtp_LHLO(self, arg: str) -> None:
        if not arg:
            await self.push("501 5.5.4 Syntax: LHLO hostname")
            return
        self.reset_transaction()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = arg
        await self.write_lhlo([self.hostname, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME",
                               "SMTPUTF8", f"SIZE {self.data_size_limit}"])

    async def smtp_DATA(self, arg: str) -> None:
        if not await data_command_ok(self, arg):
            return
        envelope = self.envelope
        assert isinstance(envelope, LMTPEnvelope)
        handler = self.event_handler
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = await self.read_message()
        n = len(envelope.rcpt_tos)
        if data.too_big:
            result = [replies.TOO_BIG] * n
        elif data.bare:
            result = [replies.BARE_LF] * n
        else:
            with self.busy():
                async with handler.slots:
                    result = await handler.deliver_all(envelope, data.message)
        await self.write(b"".join(
            f"{r.code} {r.dsn} <{rcpt}> {r.text}\r\n".encode("utf-8", "surrogateescape")
            for r, rcpt in zip(result, envelope.rcpt_tos, strict=True)))
        self.end_transaction()
        if not (data.too_big or data.bare):
            with self.busy():
                await handler.after_delivery(envelope, data.message, result)
                await report_usage(handler.cfg, handler.store, handler.run_io,
                                   envelope.targets, result)


class LmtpListener(asyncio.AbstractServer):
    """An asyncio server whose close() also ends its open LMTP sessions and whose
    wait_closed() waits until their tasks are done (Python 3.11's does neither), so the
    store can be closed safely afterwards."""

    def __init__(self, server: asyncio.Server, handler: LMTPHandler) -> None:
        self.server = server
        self.handler = handler

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self.server.sockets)

    def close(self) -> None:
        self.server.close()
        for conn in list(self.handler.connections):
            if conn.transport is not None:
                conn.transport.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()
        if self.handler.tasks:
            await asyncio.wait(list(self.handler.tasks))
        self.handler.executor.shutdown(wait=False)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.server.get_loop()

    def is_serving(self) -> bool:
        return self.server.is_serving()

    async def start_serving(self) -> None:
        await self.server.start_serving()

    async def serve_forever(self) -> None:
        await self.server.serve_forever()


def bind_unix(cfg: Config) -> socket.socket:
    """Bind cfg.listen.lmtp_socket (replacing a stale socket file) with SOCKET_MODE."""
    path = cfg.lmtp_socket
    assert path is not None
    clear_stale_socket(path, "LMTP socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        sock.listen(100)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_inherited(cfg: Config) -> socket.socket | None:
    """The Unix listener a pool of worker processes shares (bound once, by the pool)."""
    return bind_unix(cfg) if cfg.listen.lmtp_socket else None


async def start(cfg: Config, store: MailStore, *, reuse_port: bool = False,
                inherited: socket.socket | None = None) -> list[Started]:
    """Bind cfg.listen.lmtp (TCP, unless ""; with SO_REUSEPORT in a worker process) and serve
    cfg.listen.lmtp_socket (Unix, if set: bound here, or the already bound `inherited`). Each
    listener takes at most limits.lmtp_max_connections connections."""
    loop = asyncio.get_running_loop()
    handler = LMTPHandler(cfg, store)

    def factory_for(limit: ConnectionLimit) -> Callable[[], LMTPServer]:
        # handler.cfg: the reloaded config (read per session/request)
        return lambda: LMTPServer(handler, handler.cfg, handler.cfg.hostname, limit)

    def new_limit() -> ConnectionLimit:
        return ConnectionLimit(cfg.limits.lmtp_max_connections)

    servers: list[Started] = []
    try:
        if cfg.listen.lmtp:
            host, port = split_hostport(cfg.listen.lmtp, "listen.lmtp")
            servers.append(LmtpListener(await loop.create_server(
                factory_for(new_limit()), host, port, reuse_address=True,
                reuse_port=reuse_port or None), handler))
        if cfg.listen.lmtp_socket:
            sock = inherited if inherited is not None else bind_unix(cfg)
            unix = await loop.create_unix_server(factory_for(new_limit()), sock=sock)
            servers.append(LmtpListener(unix, handler))
    except BaseException:
        for s in servers:
            s.close()
        raise

    def apply(new: Config) -> None:
        if new.limits.max_concurrency != handler.cfg.limits.max_concurrency:
            handler.slots = asyncio.Semaphore(max(1, new.limits.max_concurrency))
        handler.cfg = new

    servers[0] = Reconfigurable(servers[0], apply)  # one handler behind both listeners
    log.info("lmtp.listening", tcp=cfg.listen.lmtp or None,
             unix=cfg.listen.lmtp_socket or None, pid=os.getpid())
    return servers
