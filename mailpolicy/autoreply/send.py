"""Send an auto-reply via the reinjection next hop (routed: from its domain's outbound IP), once
per sender and interval (store claim)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import aiosmtplib
import structlog

from mailpolicy.auth import dkimkeys
from mailpolicy.auth.signing import SigningError
from mailpolicy.autoreply.state import AutoreplyStore
from mailpolicy.config import Config
from mailpolicy.core.addresses import normalize_address
from mailpolicy.core.model import Autoresponder, Mailbox
from mailpolicy.esmtp.route import routed, routes_for

log = structlog.get_logger("mailpolicy.autoreply")

BACKOFF_SECONDS = (0.5, 1.0, 2.0)  # between attempts; the last value repeats
MAX_ATTEMPT_SECONDS = 10.0  # per attempt (connect to QUIT), whatever reinject.timeout_seconds says


class PermanentFailure(Exception):
    """The next hop refused the reply with a 5xx: retrying will not help."""


def interval_for(cfg: Config, ar: Autoresponder) -> dt.timedelta:
    """The per-mailbox interval, else the configured default; never under one day."""
    days = ar.interval_days if ar.interval_days is not None else cfg.autoreply.interval_days
    return dt.timedelta(days=max(1, days))


def dedup_sender(sender: str) -> str:
    """The sender as the store compares it: case-folded as a whole (domain as IDNA A-label),
    so `BOB@EXAMPLE.NET` and `bob@example.net` are one sender, as in Dovecot Pigeonhole."""
    return normalize_address(sender).lower()


async def _connected(cfg: Config, port: int, seconds: float) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=cfg.reinject.host, port=port, timeout=seconds,
                           start_tls=False, local_hostname=cfg.hostname)
    await smtp.connect()
    return smtp


async def send_once(cfg: Config, recipient: str, data: bytes, seconds: float,
                    port: int | None = None) -> None:
    """One SMTP transaction: MAIL FROM:<>, RCPT TO:<recipient>, DATA, to the reinjection
    listener at `port` (a routed one; plain reinjection when it cannot be reached, or when
    None). Raises on failure (PermanentFailure for a 5xx)."""
    smtp = None
    if port is not None and port != cfg.reinject.port:
        smtp = await routed(lambda p: _connected(cfg, p, seconds), port, recipient=recipient)
    if smtp is None:
        smtp = await _connected(cfg, cfg.reinject.port, seconds)
    options: list[str] = [] if recipient.isascii() else ["SMTPUTF8"]
    try:
        await smtp.sendmail("", [recipient], data, mail_options=options)
        await smtp.quit()
    except aiosmtplib.SMTPNotSupported as e:  # e.g. SMTPUTF8 needed but not offered
        raise PermanentFailure(str(e)) from e
    except aiosmtplib.SMTPRecipientsRefused as e:
        codes = [r.code for r in e.recipients]
        if codes and all(500 <= c < 600 for c in codes):
            raise PermanentFailure(str(e)) from e
        raise
    except aiosmtplib.SMTPResponseException as e:
        if 500 <= e.code < 600:
            raise PermanentFailure(f"{e.code} {e.message}") from e
        raise
    finally:
        smtp.close()


async def reply_port(cfg: Config, store: Any, mailbox: Mailbox, recipient: str) -> int:
    """The reinjection port of a reply from `mailbox` to `recipient`: the routed listener of
    the mailbox domain's outbound IP for a recipient outside our domains (one rule:
    core.outbound.reinjection), else the plain one."""
    if not hasattr(store, "get_domain"):
        return cfg.reinject.port
    return (await routes_for(cfg).target(store, mailbox.domain, recipient)).port


async def send_with_retries(cfg: Config, recipient: str, data: bytes,
                            ctx: dict[str, Any], port: int | None = None) -> bool:
    """Try up to cfg.autoreply.send_attempts times with a short backoff; True when sent."""
    attempts = max(1, cfg.autoreply.send_attempts)
    seconds = min(cfg.reinject.timeout_seconds, MAX_ATTEMPT_SECONDS)
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(seconds):  # the whole attempt, not just each command
                await send_once(cfg, recipient, data, seconds, port)
            return True
        except PermanentFailure as e:
            log.warning("autoreply.refused", attempt=attempt, error=str(e), **ctx)
            return False
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            log.warning("autoreply.send_failed", attempt=attempt, attempts=attempts,
                        error=f"{type(e).__name__}: {e}", **ctx)
        if attempt < attempts:
            await asyncio.sleep(BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)])
    return False


async def signed(store: Any, data: bytes, ctx: dict[str, Any]) -> bytes:
    """The reply DKIM-signed with its From domain's key (unsigned if that fails: logged)."""
    if not hasattr(store, "dkim"):
        return data
    try:
        return await dkimkeys.sign(store, data)
    except SigningError as e:
        log.warning("autoreply.unsigned", error=str(e), **ctx)
        return data


async def claim_and_send(cfg: Config, store: AutoreplyStore, mailbox: Mailbox, ar: Autoresponder, *,
                         sender: str, key: str, data: bytes, ctx: dict[str, Any]) -> str:
    """Claim (mailbox, sender, key) in the store, send, and release the claim when the send
    failed. Returns the outcome: `sent`, `already-replied` or `failed`."""
    who = dedup_sender(sender)
    claimed = await store.autoreplies.claim(mailbox.id, who, key, time.time(),
                                          interval_for(cfg, ar).total_seconds())
    if not claimed:
        return "already-replied"
    sent = False
    try:
        data = await signed(store, data, ctx)
        port = await reply_port(cfg, store, mailbox, sender)
        sent = await send_with_retries(cfg, sender, data, ctx, port)
    finally:
        if not sent:
            try:
                await store.autoreplies.release(mailbox.id, who, key)
            except Exception as e:  # the claim then just expires after the interval
                log.error("autoreply.release_failed", error=f"{type(e).__name__}: {e}", **ctx)
    return "sent" if sent else "failed"
