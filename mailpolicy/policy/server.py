"""Thin asyncio policy server: persistent connections, one reply per request, a deadline each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from ..cache import IO_DEADLINE, CachedDirectory, within_deadline
from ..config import Config, Policy, split_hostport
from ..directory import Directory
from ..lmtp.maildir import maildir_for
from ..model import Mailbox
from ..quota.usage import MAILDIRSIZE, current_usage
from .checks import Decision, Resolver, UsageFn, decide
from .protocol import Parser, Request, encode_action

log = structlog.get_logger("mailpolicy.policy")

READ_SIZE = 64 * 1024
IDLE_TIMEOUT = 600.0  # Postfix closes idle policy connections after 300 s (max_idle)
USAGE_MAX_AGE = 60.0  # seconds an unchanged maildirsize is trusted (its own stale rule: 15 min)
RESTAT_AFTER = 0.5  # seconds a usage answer is reused without even a stat (LMTP enforces too)


class UsageReader:
    """Bytes stored in a mailbox, from its Maildir++ `maildirsize` (the LMTP side keeps it up to
    date). The answer is reused while the file's inode, size and mtime stay the same (a stat
    on the event loop) for at most `max_age`; reading it, or a rescan when a Maildir has no
    such file, runs in a thread."""

    def __init__(self, maildir_root: Path, max_age: float = USAGE_MAX_AGE) -> None:
        self.root = maildir_root
        self.max_age = max_age
        self._cache: dict[str, tuple[tuple[int, int, int] | None, float, int]] = {}

    @staticmethod
    def _stamp(maildir: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(maildir / MAILDIRSIZE)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    @staticmethod
    def _is_dir(path: Path) -> bool:
        return os.path.isdir(path)

    async def __call__(self, mailbox: Mailbox) -> int:
        now = time.monotonic()
        hit = self._cache.get(mailbox.address)
        if hit is not None and now < hit[1] - self.max_age + RESTAT_AFTER:
            return hit[2]  # looked at less than RESTAT_AFTER ago: no stat at all
        maildir = maildir_for(self.root, mailbox.domain, mailbox.name)
        stamp = self._stamp(maildir)
        if stamp is None and not self._is_dir(maildir):
            self._cache[mailbox.address] = (None, now + self.max_age, 0)
            return 0  # never delivered to: nothing stored (current_usage says the same)
        if hit is not None and hit[0] == stamp and now < hit[1]:
            self._cache[mailbox.address] = (stamp, now + self.max_age, hit[2])
            return hit[2]
        used, _count = await within_deadline(asyncio.to_thread(current_usage, maildir))
        if len(self._cache) > 100_000:
            self._cache.clear()
        stamp = self._stamp(maildir)  # a rescan may have written the file
        self._cache[mailbox.address] = (stamp, now + self.max_age, used)
        return used


class IdleTimer:
    """Closes a connection after `timeout` seconds without input: one timer per connection,
    re-armed lazily (cheaper than a timeout around every read)."""

    def __init__(self, timeout: float, on_idle: Callable[[], object]) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.on_idle = on_idle
        self.fired = False
        self.last = self.loop.time()
        self._handle = self.loop.call_at(self.last + timeout, self._check)

    def touch(self) -> None:
        self.last = self.loop.time()

    def _check(self) -> None:
        due = self.last + self.timeout
        if self.loop.time() >= due:
            self.fired = True
            self.on_idle()
        else:
            self._handle = self.loop.call_at(due, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class PolicyService:
    """Answers check_policy_service requests on persistent connections."""

    def __init__(self, policy: Policy, directory: Directory, usage: UsageFn,
                 max_request: int) -> None:
        self.policy = policy
        self.directory = directory
        if not isinstance(directory, CachedDirectory):
            directory = CachedDirectory(directory, ttl=0)  # uncached, but with the deadline
        self.resolve: Resolver = directory.resolve
        self.usage = usage
        self.max_request = max_request

    async def answer(self, request: Request) -> Decision:
        """The decision, or the configured fallback when the store fails or its I/O (store
        lookups, quota reading) is not done within policy.deadline_seconds."""
        token = IO_DEADLINE.set(asyncio.get_running_loop().time() + self.policy.deadline_seconds)
        try:
            decision = await decide(request, self.resolve, self.usage, self.policy)
        except Exception as e:  # any failure: a temporary answer, never silence or OK
            log.warning("policy lookup failed, answering fallback", queue_id=request.queue_id,
                        recipient=request.recipient,
                        error=repr(e) if not isinstance(e, TimeoutError) else "timeout")
            decision = Decision(self.policy.fallback_action, "fallback")
        finally:
            IO_DEADLINE.reset(token)
        log.info("policy decision", queue_id=request.queue_id, instance=request.instance,
                 client=request.client, sender=request.sender, recipient=request.recipient,
                 state=request.protocol_state, rule=decision.rule, action=decision.action)
        return decision

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = Parser(self.max_request)
        peer = writer.get_extra_info("peername")
        idle = IdleTimer(IDLE_TIMEOUT, writer.transport.abort)
        try:
            while True:
                data = await reader.read(READ_SIZE)
                idle.touch()
                if not data:
                    if idle.fired:
                        log.info("idle policy connection closed", peer=peer)
                    elif not parser.idle:
                        log.warning("policy client closed mid-request", peer=peer)
                    break
                requests = parser.feed(data)
                for request in requests:
                    decision = await self.answer(request)
                    writer.write(encode_action(decision.action))
                if requests:
                    await writer.drain()
                if parser.error is not None:
                    log.warning("malformed policy request, disconnecting without a reply",
                                peer=peer, error=str(parser.error))
                    break
        except (ConnectionError, OSError):
            pass
        except Exception:  # never let one connection take the server down
            log.exception("policy connection failed", peer=peer)
        finally:
            idle.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def start(cfg: Config, store: Directory) -> list[asyncio.AbstractServer]:
    """Bind cfg.listen.policy and serve; returns the servers (the daemon closes them)."""
    service = PolicyService(cfg.policy, CachedDirectory.for_store(store, cfg.store_url),
                            UsageReader(cfg.maildir_root),
                            int(cfg.limits.policy_request_max))
    host, port = split_hostport(cfg.listen.policy, "listen.policy")
    server = await asyncio.start_server(service.handle, host, port, reuse_address=True)
    return [server]
