"""Per-recipient LMTP decisions (at RCPT) and the blocking Maildir delivery (after DATA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from mailpolicy.config import Config
from mailpolicy.core import replies
from mailpolicy.core.cluster import is_remote, moving, not_home
from mailpolicy.core.directory import Kind, Resolution
from mailpolicy.core.model import DefaultAction, Mailbox
from mailpolicy.core.quota import exceeds_quota, quota_reply
from mailpolicy.core.replies import Reply
from mailpolicy.maildir.lock import delivery_lock
from mailpolicy.maildir.usage import MAILDIRSIZE, add_usage, current_usage
from mailpolicy.maildir.writer import JUNK, maildir_for, write_message
from mailpolicy.runtime.logs import unexpected

log = structlog.get_logger("mailpolicy.lmtp")

QUARANTINE_HEADER = b"x-mailpolicy-quarantine"
HEADER_SCAN_MAX = 256 * 1024  # never look further than this for the end of the header block


@dataclass(frozen=True, slots=True)
class Target:
    """Where an accepted recipient goes. `mailbox` None: accepted and discarded (the domain's
    default action); `maildir` None: accepted, not stored (do-not-save)."""

    rcpt: str
    mailbox: Mailbox | None
    maildir: Path | None

    @property
    def key(self) -> tuple[int, str] | None:
        """Identity for de-duplicating one mailbox named twice in a transaction."""
        return None if self.mailbox is None else (self.mailbox.id, self.mailbox.address)


def _for(rcpt: str, reply: Reply) -> Reply:
    return Reply(reply.code, reply.dsn, f"<{rcpt}> {reply.text}")


def rcpt_decision(cfg: Config, rcpt: str, res: Resolution) -> Target | Reply:
    """What RCPT TO:<rcpt> means for local delivery: a Target, or the refusal to give.
    Mailboxes and aliases deliver; a disabled mailbox is 550 5.2.1; an unknown address of a
    `discard` domain is accepted and dropped; a redirect that ends in a local mailbox delivers
    there; anything else is 450 4.1.1: the policy service refuses such addresses at RCPT, so
    one here was accepted before the directory changed, and Postfix must keep it, not bounce."""
    if res.kind is Kind.UNKNOWN and res.action is DefaultAction.DISCARD:
        return Target(rcpt, None, None)
    final = res.final
    if final.kind is not Kind.MAILBOX or final.mailbox is None or final.loop:
        return _for(rcpt, replies.NO_DESTINATION_NOW)
    mailbox = final.mailbox
    if not mailbox.enabled:
        return _for(rcpt, replies.DISABLED)
    if mailbox.moving_to:
        return _for(rcpt, moving(mailbox))
    if is_remote(mailbox, cfg.cluster.node):
        return _for(rcpt, not_home(mailbox))
    if mailbox.no_save:
        return Target(rcpt, mailbox, None)
    return Target(rcpt, mailbox, maildir_for(cfg.maildir_root, mailbox.domain, mailbox.name))


def rcpt_quota_check(cfg: Config, target: Target, declared_size: int) -> Reply | None:
    """RCPT-time pre-check (blocking): refuse when the mailbox is already full or the size
    announced with MAIL FROM SIZE= would not fit."""
    mailbox = target.mailbox
    if mailbox is None or target.maildir is None or mailbox.max_size is None:
        return None
    used, _ = current_usage(target.maildir, mailbox.max_size)
    if exceeds_quota(used, declared_size, mailbox.max_size):
        return _for(target.rcpt, quota_reply(cfg.policy.quota_code))
    return None


def header_block(message: bytes | bytearray) -> bytes:
    """The header block of an LF-normalised message (without the blank line)."""
    end = message.find(b"\n\n", 0, HEADER_SCAN_MAX)
    if message[:1] == b"\n":
        return b""
    return bytes(message[: end if end >= 0 else min(len(message), HEADER_SCAN_MAX)])


def quarantine_verdict(message: bytes | bytearray) -> str | None:
    """The value of the filter's `X-Mailpolicy-Quarantine:` header, None when absent."""
    block = header_block(message)
    lower = block.lower()
    if QUARANTINE_HEADER not in lower:
        return None
    lines = block.split(b"\n")
    for i, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == QUARANTINE_HEADER:
            for cont in lines[i + 1:]:
                if cont[:1] not in (b" ", b"\t"):
                    break
                value += b" " + cont.strip()
            return value.strip().decode("utf-8", "replace") or "quarantine"
    return None


def trace_headers(sender: str, mailbox: Mailbox) -> bytes:
    """`Return-Path:` and `Delivered-To:` for one recipient's copy."""
    sender = "" if sender in ("", "<>") else sender
    sender = sender.replace("\r", "").replace("\n", "")  # never a second header line
    return (f"Return-Path: <{sender}>\nDelivered-To: {mailbox.address}\n"
            .encode("utf-8", "surrogateescape"))


def _count_usage(maildir: Path, size: int) -> None:
    """Add a delivered message to `maildirsize`. The message is already durable: a failure
    here must not change the 250 (a 4xx would duplicate it, a 552 bounce it); drop the file
    instead, so the next reader recalculates it."""
    try:
        add_usage(maildir, size, 1)
    except OSError as e:
        log.warning("lmtp.usage_update_failed", maildir=str(maildir), error=repr(e))
        try:
            (maildir / MAILDIRSIZE).unlink()
        except FileNotFoundError:
            pass
        except OSError as e2:
            log.error("lmtp.usage_reset_failed", maildir=str(maildir), error=repr(e2))


def deliver_one(cfg: Config, target: Target, sender: str, message: bytes | bytearray,
                quarantine: bool) -> Reply:
    """Deliver one recipient's copy (blocking; run in a thread): quota check, durable write,
    `maildirsize` update. Never raises: errors become replies via replies.from_exception.
    The reply does not name the recipient (the caller adds it per RCPT)."""
    mailbox = target.mailbox
    try:
        if mailbox is None or target.maildir is None:
            return replies.DELIVERED
        head = trace_headers(sender, mailbox)
        size = len(head) + len(message)
        folder = JUNK if quarantine else ""
        maildir = target.maildir
        if mailbox.max_size is None:
            path = write_message(maildir, (head, message), folder,
                                 published=lambda: _count_usage(maildir, size))
        else:  # check and write as one step per mailbox: parallel deliveries cannot overshoot
            with delivery_lock(maildir):
                used, _ = current_usage(maildir, mailbox.max_size)
                if exceeds_quota(used, size, mailbox.max_size):
                    return quota_reply(cfg.policy.quota_code)
                path = write_message(maildir, (head, message), folder,
                                     published=lambda: _count_usage(maildir, size))
        log.info("lmtp.delivered", mailbox=mailbox.address, size=size, folder=folder or "INBOX",
                 file=path.name)
        return replies.DELIVERED
    except Exception as e:
        reply = replies.from_exception(e)
        log.warning("lmtp.delivery_failed", rcpt=target.rcpt, reply=str(reply), error=repr(e),
                    exc_info=unexpected(e))
        return reply
