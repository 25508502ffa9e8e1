"""The filter SMTP server: aiosmtpd subclass with XFORWARD, enhanced codes and the pipeline."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from typing import Any

import structlog
from aiosmtpd.smtp import Envelope, syntax

from mailpolicy import autoreply
from mailpolicy.auth.step import DmarcStep
from mailpolicy.autoreply import MailStore
from mailpolicy.config import Config, split_hostport
from mailpolicy.core.cache import CachedDirectory
from mailpolicy.core.replies import BARE_LF, TEMP_FAILURE, TOO_BIG, Reply
from mailpolicy.esmtp.adapter import ConnectionLimit, ESMTPServer, Timeouts
from mailpolicy.esmtp.data import data_command_ok
from mailpolicy.esmtp.route import routes_for
from mailpolicy.esmtp.spool import Content, MemoryBudget, SpoolBuffer
from mailpolicy.runtime.service import Listener, Reconfigurable
from mailpolicy.smtp import xforward as xf
from mailpolicy.smtp.originating import originating_steps, signing_steps
from mailpolicy.smtp.pipeline import Pipeline, Step, Transaction
from mailpolicy.smtp.reinject import HopPool, NextHop
from mailpolicy.smtp.rewrite import HopStep, RewriteStep
from mailpolicy.smtp.routing import RouteStep
from mailpolicy.smtp.srs import Srs, SrsReverseStep, SrsStep

log = structlog.get_logger("mailpolicy.filter")

AUTOREPLY_DEADLINE = 15.0  # seconds an autoreply may add to the answer for its message


def has_bare_newline(content: bytes) -> bool:
    """True when the message has a LF not preceded by CR, or a CR not followed by LF."""
    crlf = content.count(b"\r\n")
    return content.count(b"\n") != crlf or content.count(b"\r") != crlf


class ReinjectStep:
    """The last step: send the message to the next hop; its verdict is the answer."""

    name = "reinject"

    def __init__(self, next_hop: NextHop) -> None:
        self.next_hop = next_hop

    async def __call__(self, tx: Transaction) -> Reply | None:
        return await self.next_hop.send(tx)


class Filter:
    """State shared by all filter sessions: config, directory cache, SRS, concurrency bound."""

    def __init__(self, cfg: Config, store: MailStore, originating: bool = False) -> None:
        self.cfg: Config = cfg
        self.originating = originating
        self.store = store
        self.directory = CachedDirectory.for_store(store)
        self.slots = asyncio.Semaphore(max(1, cfg.limits.max_concurrency))
        self.dmarc = DmarcStep(cfg, self.directory)
        self.hop_pool = HopPool()  # idle next-hop connections shared by the sessions
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        """Take a (reloaded) config; a session reads it when it starts."""
        if cfg.limits.max_concurrency != self.cfg.limits.max_concurrency:
            self.slots = asyncio.Semaphore(max(1, cfg.limits.max_concurrency))
        self.cfg = cfg
        self.hostname = cfg.hostname
        self.srs = Srs.from_config(cfg)
        # submitted mail passes before the queue: a refusal reaches the user's client
        self.mode = "before-queue" if self.originating else cfg.filter.mode
        self.networks = [ipaddress.ip_network(n, strict=False)
                         for n in cfg.filter.authorized_xforward]
        self.connections = ConnectionLimit(cfg.limits.filter_max_connections)
        self.memory = MemoryBudget(cfg.limits.filter_messages_in_memory)
        self.spool_dir = cfg.state_dir / "spool"
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dmarc.configure(cfg)
        # steps shared by every session; a DMARC step goes before "rewrite" (see pipeline.py)
        self.pre_steps: list[Step] = [HopStep(self.hostname, cfg.filter.max_passes),
                                      SrsReverseStep(self.srs), self.dmarc]
        self.post_steps: list[Step] = [RewriteStep(self.directory, self.hostname),
                                       SrsStep(self.srs, self.directory),
                                       RouteStep(routes_for(cfg), self.directory)]
        if self.originating:  # submitted by an authenticated user: no DMARC check of our own mail
            self.pre_steps = [HopStep(self.hostname, cfg.filter.max_passes),
                              *originating_steps(cfg, self.directory, self.store)]
        # DKIM (submitted mail) or ARC (forwarded copies): last, over the final headers
        self.post_steps += signing_steps(cfg, self.store, self.dmarc.resolver,
                                         self.originating)

    def spool_buffer(self) -> SpoolBuffer:
        """Where the next message is kept while it is filtered."""
        return SpoolBuffer(self.spool_dir, int(self.cfg.limits.filter_spool_threshold),
                           self.memory)

    def next_hop(self) -> NextHop:
        r = self.cfg.reinject
        return NextHop(r.host, r.port, r.timeout_seconds, self.hostname, self.mode,
                       self.hop_pool)

    def pipeline(self, next_hop: NextHop) -> Pipeline:
        """The steps for one session (the reinject step holds that session's connection)."""
        return Pipeline([*self.pre_steps, *self.post_steps, ReinjectStep(next_hop)])

    def authorized(self, peer: Any) -> bool:
        try:
            ip = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
        except (ValueError, TypeError, IndexError):
            return False
        return any(ip in n for n in self.networks)


class FilterEnvelope(Envelope):
    """aiosmtpd's envelope plus XFORWARD attributes: a new envelope after EHLO, RSET and each
    message resets them, as XFORWARD_README requires."""

    def __init__(self) -> None:
        super().__init__()
        self.xforward: dict[str, str] | None = None
        self.bare = False  # the DATA had a bare LF or CR (then content is empty)


class FilterSMTP(ESMTPServer):
    """One filter session."""

    line_length_limit = 64 * 1024  # transparency: long lines pass (Postfix folds at 998 anyway)

    def __init__(self, flt: Filter, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.filter = flt
        self.next_hop_conn = flt.next_hop()
        self.steps = flt.pipeline(self.next_hop_conn)
        self.messages = 0
        super().__init__(_Handler(self), data_size_limit=flt.cfg.internal_size_limit,
                         enable_SMTPUTF8=True, decode_data=False, hostname=flt.hostname,
                         ident="mailpolicy filter", timeouts=Timeouts.from_config(flt.cfg),
                         connection_limit=flt.connections, loop=loop)

    def new_envelope(self) -> FilterEnvelope:
        return FilterEnvelope()

    async def smtp_EHLO(self, hostname: str) -> None:
        with self.greeting_reply():
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        with self.greeting_reply():
            await super().smtp_HELO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self.filter.mode == "before-queue" and self.messages >= 1:
            await self.push("503 5.5.1 Error: one message per connection")
            return
        await super().smtp_MAIL(arg)

    @syntax("XFORWARD attribute=value ...")
    async def smtp_XFORWARD(self, arg: str | None) -> None:
        assert self.session is not None and isinstance(self.envelope, FilterEnvelope)
        if not self.filter.authorized(self.session.peer):
            await self.push("550 5.7.0 Error: insufficient authorization")
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        try:
            attrs = xf.parse(arg)
        except xf.XForwardError as e:
            await self.push(f"501 5.5.4 {e}")
            return
        self.envelope.xforward = xf.update(self.envelope.xforward, attrs)
        await self.push("250 2.0.0 Ok")

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, but read in large steps (DataDecoder keeping CRLF, dots unstuffed,
        bare CR/LF and the size limit checked as it goes) instead of one read per line."""
        if await self.check_auth_needed("DATA") or not await data_command_ok(self, arg):
            return
        envelope = self.envelope
        assert isinstance(envelope, FilterEnvelope)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = self.filter.spool_buffer()  # memory, or a spool file (see esmtp/spool.py)
        try:
            data = await self.read_message(crlf=True, buffer=spool)
            if data.too_big:
                log.info("filter.too_big",
                         queue_id=xf.value(envelope.xforward or {}, "IDENT") or "-",
                         sender=envelope.mail_from, rcpts=",".join(envelope.rcpt_tos),
                         reply=str(TOO_BIG))
                self.end_transaction()
                await self.push(str(TOO_BIG))
                return
            content = b"" if data.bare else spool.take()  # never a second copy
            envelope.content = envelope.original_content = content  # type: ignore[assignment]
            envelope.bare = data.bare
            with self.busy():
                status = await self.event_handler.handle_DATA(self, self.session, envelope)
        finally:
            spool.release()
        self.end_transaction()  # a new envelope: XFORWARD attributes reset
        await self.push(status)
        if status.startswith("421"):  # the next hop is closing: so do we (RFC 5321 3.8)
            await self.next_hop_conn.quit(keep=False)
            self.close_after_reply()

    async def smtp_QUIT(self, arg: str) -> None:
        if not arg:
            await self.next_hop_conn.quit()
        await super().smtp_QUIT(arg)

    def connection_lost(self, error: Exception | None) -> None:
        self.next_hop_conn.close()
        super().connection_lost(error)


class _Handler:
    """aiosmtpd hooks for FilterSMTP."""

    def __init__(self, server: FilterSMTP) -> None:
        self.server = server

    async def handle_EHLO(self, server: FilterSMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        lines = [r[4:] for r in responses[1:] if r[4:] != "HELP"]
        lines.insert(0, "PIPELINING")
        lines.append("ENHANCEDSTATUSCODES")
        if server.filter.authorized(session.peer):
            lines.append(xf.KEYWORD)
        return [responses[0], *(f"250-{x}" for x in lines[:-1]), f"250 {lines[-1]}"]

    async def autoreply(self, tx: Transaction, sender: str, content: bytes) -> None:
        """Autoreplies for do-not-save mailboxes (their mail never reaches LMTP), bounded so
        the answer to Postfix is never held long. autoreply never raises."""
        flt = self.server.filter
        for mb in tx.notes["forward_only"]:
            try:
                await asyncio.wait_for(
                    autoreply.on_forward_only(flt.cfg, flt.store, mb, sender, content),
                    AUTOREPLY_DEADLINE)
            except TimeoutError:
                log.warning("filter.autoreply_timeout", id=tx.id, mailbox=mb.address)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, asyncio.IncompleteReadError) and not error.partial:
            # the client closed between two commands (Postfix drops idle cached connections
            # so): a normal end, and the session ends here instead of reading EOF again
            log.info("filter.client_closed", peer=self.server.session.peer
                     if self.server.session else None)
            if self.server.transport is not None:
                self.server.transport.close()
            return "421 4.4.2 Connection closed"
        log.error("filter.session_error", error=repr(error), exc_info=error)
        return str(TEMP_FAILURE)

    async def handle_DATA(self, server: FilterSMTP, session: Any, envelope: FilterEnvelope,
                          ) -> str:
        flt = self.server.filter
        self.server.messages += 1
        content: Content = envelope.original_content or b""
        sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        tx = Transaction(mail_from=sender, mail_options=list(envelope.mail_options),
                         rcpt_tos=list(envelope.rcpt_tos), xforward=dict(envelope.xforward or {}),
                         content=content, mode=flt.mode, id=secrets.token_hex(5).upper(),
                         peer=session.peer, helo=session.host_name or "")
        if envelope.bare:  # DataDecoder checked every line
            reply = BARE_LF
        else:
            async with flt.slots:
                reply = await self.server.steps.run(tx)
            if flt.mode == "before-queue":  # one message per connection
                await self.server.next_hop_conn.quit()
        if reply.ok and tx.notes.get("forward_only"):
            await self.autoreply(tx, sender, bytes(content))
        log.info("filter.message", id=tx.id, queue_id=tx.queue_id,
                 client=tx.client_address or "-", helo=tx.client_helo or "-", sender=sender,
                 rcpts=",".join(tx.original_rcpts), to=",".join(tx.rcpt_tos) or "-",
                 size=len(content), reply=str(reply))
        return str(reply)


async def start(cfg: Config, store: MailStore) -> list[Listener]:
    """Bind the filter listener (cfg.listen.filter) and, with submission, the originating
    one (cfg.listen.filter_originating: submitted mail, signed); return the servers."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    loop = asyncio.get_running_loop()
    out: list[Listener] = []
    kinds = [("filter", False)] + ([("filter_originating", True)]
                                   if cfg.submission.enabled else [])
    for key, originating in kinds:
        host, port = split_hostport(getattr(cfg.listen, key), f"listen.{key}")
        flt = Filter(cfg, store, originating=originating)
        server = await loop.create_server(
            lambda flt=flt: FilterSMTP(flt, loop=loop), host, port)  # type: ignore[misc]
        log.info("filter.listening", address=f"{host}:{server.sockets[0].getsockname()[1]}",
                 mode=flt.mode, originating=originating,
                 next_hop=f"{cfg.reinject.host}:{cfg.reinject.port}")
        out += [Reconfigurable(server, flt.configure), _StepsCloser(flt)]
    return out


class _StepsCloser:
    """Closed by the daemon after the listener: stops the DMARC verification processes and
    drops the idle next-hop connections."""

    def __init__(self, flt: Filter) -> None:
        self.flt = flt

    def close(self) -> None:
        self.flt.dmarc.close()
        self.flt.hop_pool.close()

    async def wait_closed(self) -> None:
        return None
