"""Reinjection to the next hop (the 10026 smtpd, or a routed listener) with aiosmtplib: 250
only after its 250."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import cast

import aiosmtplib
import structlog

from mailpolicy.core.replies import Reply
from mailpolicy.esmtp.route import routed
from mailpolicy.esmtp.stream import dot_stuffed
from mailpolicy.smtp import xforward as xf
from mailpolicy.smtp.pipeline import Transaction

log = structlog.get_logger("mailpolicy.filter")

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\s*")
_CTRL = re.compile(r"[\x00-\x20\x7f<>]")
SEND_BUFFER = 1024 * 1024  # bytes queued on the socket before DATA waits for it to drain
DRAIN_POLL = 0.002


class Refused(Exception):
    """The next hop answered something other than success at `stage`."""

    def __init__(self, stage: str, code: int, text: str) -> None:
        super().__init__(f"{stage}: {code} {text}")
        self.stage, self.code, self.text = stage, code, text


def refusal_reply(stage: str, code: int, text: str, mode: str) -> Reply:
    """Map a next-hop refusal to our answer. 4xx stays 4xx. A 5xx is relayed only in
    before-queue mode, or after-queue for a final-dot refusal (content rejected for good,
    FILTER_README's "550 content rejected"); MAIL/RCPT/XFORWARD refusals in after-queue mode
    mean a misconfigured next hop: 4xx, so Postfix keeps the mail."""
    text = " ".join(text.split())
    m = _ENHANCED.match(text)
    detail = text[m.end():] if m else text
    dsn = ".".join(m.groups()) if m else f"{code // 100}.0.0"
    permanent = code >= 500
    if permanent and mode != "before-queue" and stage != "DATA":
        code, dsn = 451, "4" + dsn[1:]
    return Reply(code, dsn, f"next hop {stage}: {detail}"[:400])


async def send_data(smtp: aiosmtplib.SMTP, parts: list[bytes | memoryview],
                    reply_timeout: float) -> aiosmtplib.SMTPResponse:
    """DATA with the message streamed in pieces (dot_stuffed), never copied whole (aiosmtplib's
    own data() makes several copies of it); the next hop's final reply."""
    resp = await smtp.execute_command(b"DATA")
    if resp.code != 354:
        return resp
    protocol = smtp.protocol
    assert protocol is not None and protocol.transport is not None
    transport = cast(asyncio.Transport, protocol.transport)
    pieces = dot_stuffed(parts)
    last = b""
    for piece in pieces:
        if last:
            protocol.write(last)
            while transport.get_write_buffer_size() > SEND_BUFFER:  # bounded by the caller's
                await asyncio.sleep(DRAIN_POLL)  # timeout; no public drain in aiosmtplib
                if transport.is_closing():
                    raise aiosmtplib.SMTPServerDisconnected("connection lost during DATA")
        last = piece
    protocol.write(last)  # ".<CRLF>"; read_response() now, no await between: the reply is ours
    resp = await protocol.read_response(reply_timeout)
    if resp.code == 421:
        smtp.close()
    return resp
def accepted_reply(texts: list[str]) -> Reply:
    """Our 250 once the next hop said 250 to every envelope: its texts without their own
    status codes, so the client reads `250 2.0.0 Ok: queued as X`, not `Ok: 2.0.0 Ok: ...`."""
    parts = [_ENHANCED.sub("", " ".join(t.split()), count=1) for t in texts]
    text = "; ".join(p for p in parts if p) or "Ok"
    if not text.lower().startswith("ok"):
        text = f"Ok: {text}"
    return Reply(250, "2.0.0", text[:400])


def _addr(address: str) -> bytes:
    if _CTRL.search(address.replace(" ", "")) or "\r" in address or "\n" in address:
        raise ValueError(f"unsafe envelope address {address!r}")
    return f"<{address}>".encode()


def deliveries(tx: Transaction, plain: int) -> list[tuple[int, str, list[str]]]:
    """(port, envelope sender, recipients) of each SMTP transaction the message needs, order
    kept: the plain reinjection port, unless `tx.notes["routes"]` (the route step) sends a
    recipient through a routed listener."""
    routes: dict[str, int] = tx.notes.get("routes") or {}
    groups: dict[tuple[int, str], list[str]] = {}
    for sender, rcpts in tx.envelopes():
        for r in rcpts:
            groups.setdefault((routes.get(r, plain), sender), []).append(r)
    return [(port, sender, rcpts) for (port, sender), rcpts in groups.items()]


class HopPool:
    """Idle next-hop connections kept between filter sessions: a session takes one instead
    of connecting (before-queue mode has a session per message, so otherwise every message
    paid a connection, an EHLO and a QUIT on both sides) and gives its connections back when
    it ends between transactions. XFORWARD is sent again before every transaction, so a
    connection carries nothing of its last session. Bounded; a connection idle longer than
    `idle_seconds` (well below Postfix's smtpd_timeout) is closed instead of reused."""

    def __init__(self, max_idle: int = 16, idle_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_idle, self.idle_seconds, self.clock = max_idle, idle_seconds, clock
        self._idle: dict[tuple[str, int], list[tuple[float, aiosmtplib.SMTP]]] = {}

    def take(self, host: str, port: int) -> aiosmtplib.SMTP | None:
        """The most recently given connection to (host, port) still fit for use, or None."""
        idle = self._idle.get((host, port))
        now = self.clock()
        while idle:
            since, smtp = idle.pop()
            if smtp.is_connected and now - since < self.idle_seconds:
                return smtp
            smtp.close()
        return None

    def give(self, host: str, port: int, smtp: aiosmtplib.SMTP) -> bool:
        """Keep `smtp` (connected, between transactions); False when it was not kept."""
        idle = self._idle.setdefault((host, port), [])
        if not smtp.is_connected or len(idle) >= self.max_idle:
            return False
        idle.append((self.clock(), smtp))
        return True

    def close(self) -> None:
        """Drop every idle connection (the listener is closing)."""
        pools, self._idle = self._idle, {}
        for idle in pools.values():
            for _, smtp in idle:
                smtp.close()


class NextHop:
    """Reusable SMTP connections to the next hop (the plain reinjection port, and routed
    listeners as needed), for one filter session; taken from and given back to `pool`."""

    def __init__(self, host: str, port: int, timeout: float, local_hostname: str,
                 mode: str = "after-queue", pool: HopPool | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.local_hostname = local_hostname
        self.mode = mode
        self.pool = pool
        self._conns: dict[int, aiosmtplib.SMTP] = {}
        self._active = port

    async def _connect(self, port: int) -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(hostname=self.host, port=port, timeout=self.timeout,
                               local_hostname=self.local_hostname, start_tls=False)
        try:
            await smtp.connect()
            if not smtp.supports_esmtp:
                await smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        self._conns[port] = smtp
        return smtp

    def close(self) -> None:
        """Drop the connections (no QUIT)."""
        conns, self._conns = self._conns, {}
        for smtp in conns.values():
            smtp.close()

    async def quit(self, keep: bool = True) -> None:
        """The session is over: give the connections (all between transactions) back to the
        pool, or (`keep` False, or the pool is full) say QUIT politely (bounded)."""
        conns, self._conns = self._conns, {}
        for port, smtp in conns.items():
            if keep and self.pool is not None and self.pool.give(self.host, port, smtp):
                continue
            try:
                async with asyncio.timeout(min(self.timeout, 5.0)):
                    await smtp.quit()
            except Exception:
                smtp.close()

    async def _deliver(self, tx: Transaction, port: int, sender: str, rcpts: list[str],
                       message: list[bytes | memoryview]) -> str:
        """One envelope on the connection to `port` (reused, reconnected once if the reused
        one was dropped; a routed listener out of reach falls back to the plain port)."""
        self._active = port  # the connection a refusal leaves inside a transaction
        smtp = self._conns.get(port)
        if smtp is None and self.pool is not None:
            smtp = self.pool.take(self.host, port)
            if smtp is not None:
                self._conns[port] = smtp
        if smtp is not None and smtp.is_connected:
            try:
                return await self._transaction(smtp, tx, sender, rcpts, message)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as e:
                log.info("reinject.reconnect", id=tx.id, port=port, error=str(e))
        if smtp is not None:
            del self._conns[port]
            smtp.close()
        if port == self.port:
            smtp = await self._connect(port)
        else:
            smtp = await routed(self._connect, port, id=tx.id, queue_id=tx.queue_id,
                                rcpts=",".join(rcpts))
            if smtp is None:
                return await self._deliver(tx, self.port, sender, rcpts, message)
        return await self._transaction(smtp, tx, sender, rcpts, message)

    async def send(self, tx: Transaction) -> Reply:
        """Send every envelope of the transaction; a Reply for the whole message."""
        message = tx.message_parts()
        done: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                for port, sender, rcpts in deliveries(tx, self.port):
                    done.append(await self._deliver(tx, port, sender, rcpts, message))
        except Refused as e:
            await self._reset(self._active)
            reply = refusal_reply(e.stage, e.code, e.text, self.mode)
            log.warning("reinject.refused", id=tx.id, queue_id=tx.queue_id, stage=e.stage,
                        port=self._active, next_hop_reply=f"{e.code} {e.text}", answer=str(reply),
                        partial="earlier envelopes delivered: a retry duplicates them"
                        if done else "")
            return reply
        except TimeoutError:
            self.close()
            log.warning("reinject.timeout", id=tx.id, queue_id=tx.queue_id,
                        seconds=self.timeout)
            return Reply(451, "4.4.2", "Next hop timed out, try again later")
        except (OSError, aiosmtplib.SMTPException) as e:
            self.close()
            log.warning("reinject.unavailable", id=tx.id, queue_id=tx.queue_id,
                        port=self._active, error=str(e))
            return Reply(451, "4.4.1", "Next hop unavailable, try again later")
        return accepted_reply(done)

    async def _reset(self, port: int) -> None:
        smtp = self._conns.get(port)
        if smtp is None:
            return
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                await smtp.rset()
        except Exception:
            self._conns.pop(port, None)
            smtp.close()

    async def _transaction(self, smtp: aiosmtplib.SMTP, tx: Transaction, sender: str,
                           rcpts: list[str], message: list[bytes | memoryview]) -> str:
        allowed = xf.announced(smtp.esmtp_extensions.get("xforward"))
        for line in xf.commands(tx.xforward, allowed):
            verb, _, rest = line.partition(" ")
            resp = await smtp.execute_command(verb.encode(), rest.encode())
            if resp.code != 250:
                raise Refused("XFORWARD", resp.code, resp.message)
        size = sum(len(p) for p in message)
        opts = [b"SIZE=%d" % size] if smtp.supports_extension("size") else []
        utf8 = "SMTPUTF8" in tx.mail_options
        for o in tx.mail_options:
            if o.startswith("BODY=") and smtp.supports_extension("8bitmime"):
                opts.append(o.encode("ascii"))
        if utf8:
            if not smtp.supports_extension("smtputf8"):
                raise Refused("MAIL", 451, "4.6.7 next hop does not offer SMTPUTF8")
            opts.append(b"SMTPUTF8")
        resp = await smtp.execute_command(b"MAIL", b"FROM:" + _addr(sender), *opts)
        if resp.code != 250:
            raise Refused("MAIL", resp.code, resp.message)
        refused: list[tuple[int, str, str]] = []
        for rcpt in rcpts:
            resp = await smtp.execute_command(b"RCPT", b"TO:" + _addr(rcpt))
            if resp.code not in (250, 251):
                refused.append((resp.code, resp.message, rcpt))
        if refused:  # nothing delivered yet: refuse the whole message, no partial delivery
            temporary = [r for r in refused if r[0] < 500]
            code, text, rcpt = (temporary or refused)[0]
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise Refused("RCPT", code, f"{' '.join(text.split())} <{rcpt}>{more}")
        resp = await send_data(smtp, message, self.timeout)
        if resp.code != 250:
            raise Refused("DATA", resp.code, resp.message)
        return resp.message
