"""Send limits of authenticated users: asked at DATA on the submission services (the request
carries sasl_username and recipient_count), counted in the store (exact across workers)."""

from __future__ import annotations

from typing import Any

from mailpolicy.config import Sending
from mailpolicy.policy.checks import DUNNO, Decision
from mailpolicy.policy.protocol import Request
from mailpolicy.store.sending import Limit

LIMIT_STATES = frozenset({"DATA"})  # counted once per message, with its recipient_count


def applies(request: Request) -> bool:
    """Whether this request is a send-limit question (an authenticated client at DATA)."""
    return bool(request.sasl_username) and request.protocol_state in LIMIT_STATES


def limits_for(cfg: Sending, login: str, own: tuple[int | None, int | None]) -> list[Limit]:
    """The limits a message of `login` counts against: the mailbox's (its own or the config's)
    and its domain's."""
    messages, recipients = own
    domain = login.rpartition("@")[2]
    return [
        Limit(f"mailbox:{login}", cfg.messages_per_hour if messages is None else messages,
              cfg.recipients_per_hour if recipients is None else recipients, f"mailbox {login}"),
        Limit(f"domain:{domain}", cfg.domain_messages_per_hour, cfg.domain_recipients_per_hour,
              f"domain {domain}"),
    ]


def over_limit_action(what: str) -> str:
    """The access(5) action for a message over a limit: deferred, the limit named."""
    return f"450 4.7.1 Send limit reached: {what}; try again later"


class SendLimiter:
    """Counts each submitted message (and its recipients) against the limits of its login."""

    def __init__(self, cfg: Sending, store: Any) -> None:
        self.cfg = cfg
        self.store = store

    async def decide(self, request: Request) -> Decision:
        login = request.sasl_username.strip().lower()
        mailbox = await self.store.get_mailbox(login)
        own = await self.store.sending.limits(mailbox.id) if mailbox else (None, None)
        over = await self.store.sending.count(limits_for(self.cfg, login, own), 1,
                                              max(1, request.recipient_count))
        if over is not None:
            return Decision(over_limit_action(over), "send-limit")
        return Decision(DUNNO, "send-limit-ok")
