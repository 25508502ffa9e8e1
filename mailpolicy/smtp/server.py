"""The filter SMTP server: aiosmtpd subclass with XFORWARD, enhanced codes and the pipeline."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, syntax

from mailpolicy import autoreply
from mailpolicy.auth.step import DmarcStep
from mailpolicy.config import Config, split_hostport
from mailpolicy.core.cache import CachedDirectory
from mailpolicy.core.directory import Directory
from mailpolicy.core.replies import BARE_LF, TEMP_FAILURE, TOO_BIG, Reply
from mailpolicy.esmtp.data import data_command_ok, read_data
from mailpolicy.runtime.service import Listener
from mailpolicy.smtp import xforward as xf
from mailpolicy.smtp.pipeline import Pipeline, Step, Transaction
from mailpolicy.smtp.reinject import NextHop
from mailpolicy.smtp.rewrite import HopStep, RewriteStep
from mailpolicy.smtp.srs import Srs, SrsReverseStep, SrsStep

log = structlog.get_logger("mailpolicy.filter")

_CODE_RE = re.compile(r"^(\d)(\d\d)([ -])(.*)$", re.DOTALL)
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?:\s|$)")
_DEFAULT_DSN = {500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4",
                530: "5.7.0", 552: "5.3.4", 553: "5.1.3", 555: "5.5.4"}


AUTOREPLY_DEADLINE = 15.0  # seconds an autoreply may add to the answer for its message

def has_bare_newline(content: bytes) -> bool:
    """True when the message has a LF not preceded by CR, or a CR not followed by LF."""
    crlf = content.count(b"\r\n")
    return content.count(b"\n") != crlf or content.count(b"\r") != crlf


def with_enhanced_code(status: str) -> str:
    """Give an aiosmtpd built-in reply an enhanced status code (RFC 2034)."""
    m = _CODE_RE.match(status)
    if not m or _HAS_ENHANCED.match(m.group(4)):
        return status
    code = int(m.group(1) + m.group(2))
    if code in (220, 354):
        return status
    dsn = _DEFAULT_DSN.get(code, f"{m.group(1)}.0.0")
    return f"{code}{m.group(3)}{dsn} {m.group(4)}"


class ReinjectStep:
    """The last step: send the message to the next hop; its verdict is the answer."""

    name = "reinject"

    def __init__(self, next_hop: NextHop) -> None:
        self.next_hop = next_hop

    async def __call__(self, tx: Transaction) -> Reply | None:
        return await self.next_hop.send(tx)


class Filter:
    """State shared by all filter sessions: config, directory cache, SRS, concurrency bound."""

    def __init__(self, cfg: Config, store: Directory) -> None:
        self.cfg = cfg
        self.store = store
        self.hostname = cfg.hostname
        self.directory = CachedDirectory.for_store(store)
        self.srs = Srs.from_config(cfg)
        self.mode = cfg.filter.mode
        self.networks = [ipaddress.ip_network(n, strict=False)
                         for n in cfg.filter.authorized_xforward]
        self.slots = asyncio.Semaphore(max(1, cfg.limits.max_concurrency))
        # steps shared by every session; a DMARC step goes before "rewrite" (see pipeline.py)
        self.dmarc = DmarcStep(cfg, self.directory)
        self.pre_steps: list[Step] = [HopStep(self.hostname, cfg.filter.max_passes),
                                      SrsReverseStep(self.srs), self.dmarc]
        self.post_steps: list[Step] = [RewriteStep(self.directory, self.hostname),
                                       SrsStep(self.srs, self.directory)]

    def next_hop(self) -> NextHop:
        r = self.cfg.reinject
        return NextHop(r.host, r.port, r.timeout_seconds, self.hostname, self.mode)

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


class FilterSMTP(SMTP):
    """One filter session."""

    line_length_limit = 64 * 1024  # transparency: long lines pass (Postfix folds at 998 anyway)

    def __init__(self, flt: Filter, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.filter = flt
        self.next_hop_conn = flt.next_hop()
        self.steps = flt.pipeline(self.next_hop_conn)
        self.messages = 0
        self._in_helo = False
        super().__init__(_Handler(self), data_size_limit=flt.cfg.internal_size_limit,
                         enable_SMTPUTF8=True, decode_data=False, hostname=flt.hostname,
                         ident="mailpolicy filter", timeout=300, loop=loop)

    def _create_envelope(self) -> FilterEnvelope:
        return FilterEnvelope()

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and not self._in_helo:
            status = with_enhanced_code(status)
        await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_helo = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

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
        data = await read_data(self._reader, self.data_size_limit or 0, self._reset_timeout,
                               crlf=True)
        if data.too_big:
            self._set_post_data_state()
            await self.push(str(TOO_BIG))
            return
        content = bytes(data.message)
        data.message = bytearray()
        envelope.content = envelope.original_content = content
        envelope.bare = data.bare
        status = await self.event_handler.handle_DATA(self, self.session, envelope)
        self._set_post_data_state()  # a new envelope: XFORWARD attributes reset
        await self.push(status)

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
        content: bytes = envelope.original_content or b""
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
            await self.autoreply(tx, sender, content)
        log.info("filter.message", id=tx.id, queue_id=tx.queue_id,
                 client=tx.client_address or "-", helo=tx.client_helo or "-", sender=sender,
                 rcpts=",".join(tx.original_rcpts), to=",".join(tx.rcpt_tos) or "-",
                 size=len(content), reply=str(reply))
        return str(reply)


async def start(cfg: Config, store: Directory) -> list[Listener]:
    """Bind the filter listener (cfg.listen.filter) and return the serving server."""
    host, port = split_hostport(cfg.listen.filter, "listen.filter")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    flt = Filter(cfg, store)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FilterSMTP(flt, loop=loop), host, port)
    log.info("filter.listening", address=f"{host}:{server.sockets[0].getsockname()[1]}",
             mode=flt.mode, next_hop=f"{cfg.reinject.host}:{cfg.reinject.port}")
    return [server, _StepsCloser(flt)]


class _StepsCloser:
    """Closed by the daemon after the listener: stops the DMARC verification processes."""

    def __init__(self, flt: Filter) -> None:
        self.flt = flt

    def close(self) -> None:
        self.flt.dmarc.close()

    async def wait_closed(self) -> None:
        return None
