"""The autoresponder: entry points called after final delivery (LMTP) or instead of it (filter).

Two entry points, same signature and behaviour; they differ only in the trigger logged:

- `on_delivered(cfg, store, mailbox, envelope_sender, message)`: the LMTP server calls it for
  each recipient mailbox that got `250` for `message`. Call it after the LMTP replies were
  written, so the reply to Postfix is never delayed by the auto-reply.
- `on_forward_only(cfg, store, mailbox, envelope_sender, message)`: the content filter calls it
  for a do-not-save mailbox (which never reaches LMTP), once the next hop accepted the message.

Both never raise (errors are logged; cancellation still propagates) and are bounded in time:
at most `cfg.autoreply.send_attempts` attempts of at most `send.MAX_ATTEMPT_SECONDS` each.
The decision is `suppress.decide` (pure); dedup is a race-safe claim in the store; the reply is
built by `compose.compose` and sent by `send.claim_and_send` with `MAIL FROM:<>`.

Layer. May import: config, core. Imported by the filter and LMTP.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from mailpolicy.autoreply.compose import ComposeError, compose, response_key, to_bytes
from mailpolicy.autoreply.send import claim_and_send, log
from mailpolicy.autoreply.state import AutoreplyStore, MailStore, ReplyLedger
from mailpolicy.autoreply.suppress import Decision, addressed_alias, decide, parse_headers
from mailpolicy.config import Config
from mailpolicy.core.model import Mailbox

__all__ = ["AutoreplyStore", "Decision", "MailStore", "ReplyLedger", "decide", "on_delivered",
           "on_forward_only"]


def today_in(cfg: Config, now: dt.datetime | None = None) -> dt.date:
    """Today's date in cfg.autoreply.timezone (start/end dates are compared with it)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(cfg.autoreply.timezone)).date()


async def _respond(cfg: Config, store: AutoreplyStore, mailbox: Mailbox, sender: str,
                   message: bytes, trigger: str) -> str:
    ctx = {"mailbox": mailbox.address, "sender": sender, "trigger": trigger}
    ar = await store.autoreplies.get(mailbox.id)
    if ar is None or not ar.active:
        return "disabled"  # the common case: no parsing, no log line
    headers = parse_headers(message)
    verdict = decide(mailbox, ar, today=today_in(cfg), sender=sender, headers=headers,
                     check_recipient=cfg.autoreply.check_recipient)
    if not verdict.send:
        log.info("autoreply.suppressed", rule=verdict.rule, **ctx)
        return verdict.rule
    try:
        data = to_bytes(compose(mailbox, ar, recipient=sender, original=headers,
                                hostname=cfg.hostname,
                                alias=addressed_alias(mailbox, headers)))
    except (ComposeError, ValueError) as e:
        log.error("autoreply.compose_failed", error=str(e), **ctx)
        return "compose-failed"
    outcome = await claim_and_send(cfg, store, mailbox, ar, sender=sender,
                                   key=response_key(ar), data=data, ctx=ctx)
    if outcome == "sent":
        log.info("autoreply.sent", rule=verdict.rule, **ctx)
    elif outcome == "already-replied":
        log.info("autoreply.suppressed", rule="already-replied", **ctx)
    else:
        log.error("autoreply.failed", **ctx)
    return outcome


async def _guarded(cfg: Config, store: AutoreplyStore, mailbox: Mailbox, sender: str,
                   message: bytes, trigger: str) -> str:
    try:
        return await _respond(cfg, store, mailbox, sender, message, trigger)
    except Exception as e:  # never fail or block the delivery of the original
        log.exception("autoreply.error", mailbox=mailbox.address,
                      sender=sender, trigger=trigger, error=f"{type(e).__name__}: {e}")
        return "error"


async def on_delivered(cfg: Config, store: AutoreplyStore, mailbox: Mailbox, envelope_sender: str,
                       message: bytes) -> None:
    """Answer `message` for `mailbox` after LMTP delivered it (250). Never raises."""
    await _guarded(cfg, store, mailbox, envelope_sender, message, "delivered")


async def on_forward_only(cfg: Config, store: AutoreplyStore, mailbox: Mailbox,
                          envelope_sender: str, message: bytes) -> None:
    """Answer `message` for a do-not-save `mailbox` (the filter forwarded it to its copies
    only and it never reaches LMTP). Never raises."""
    await _guarded(cfg, store, mailbox, envelope_sender, message, "forward-only")

