"""Policy decisions at RCPT: small named rules over resolve(), evaluated in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from mailpolicy.config import Policy
from mailpolicy.core.directory import Kind, Resolution
from mailpolicy.core.model import Mailbox
from mailpolicy.core.quota import exceeds_quota, quota_reply
from mailpolicy.core.replies import DISABLED
from mailpolicy.policy.protocol import Request

DUNNO = "DUNNO"  # "no opinion": never OK, which would skip the restrictions after us
# Postfix itself puts "<addr>: Recipient address rejected: " before the text of a 4xx/5xx
# action at RCPT, so the actions carry only the code, the DSN and the reason.
POSTFIX_PREFIX = "Recipient address rejected:"

UsageFn = Callable[[Mailbox], Awaitable[int]]  # bytes stored in the mailbox now
Resolver = Callable[[str], Awaitable[Resolution]]  # resolve() over the directory (maybe cached)
PeekResolver = Callable[[str], Resolution | None]  # the cached answer, None when not known
PeekUsage = Callable[[Mailbox], int | None]  # the usage known without I/O, or None


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # the access(5) action sent back to Postfix
    rule: str  # the name of the rule that decided


class Context(NamedTuple):  # a tuple: made for every request, cheaper than a dataclass
    request: Request
    resolution: Resolution
    policy: Policy
    used: int | None = None  # bytes in the mailbox, read only when a quota applies

    @property
    def recipient(self) -> str:
        return self.request.recipient


Rule = Callable[[Context], str | None]  # an action, or None: not decisive, ask the next rule


def not_ours(ctx: Context) -> str | None:
    """Addresses outside our domains (and unparsable ones) are Postfix's business."""
    return DUNNO if ctx.resolution.kind in (Kind.FOREIGN, Kind.INVALID) else None


def unknown_reject(ctx: Context) -> str | None:
    """No such mailbox in a `reject` domain, or a redirect chain that ends nowhere (a loop, an
    unknown or disabled target): 550 5.1.1 at RCPT, so nothing ever bounces or is dropped.
    The client sees `550 5.1.1 <addr>: Recipient address rejected: mailbox does not exist`."""
    r = ctx.resolution
    if r.kind is Kind.UNKNOWN and not r.accepted_at_rcpt:
        return _reject_action(ctx.policy.reject_text)
    return None


@lru_cache(maxsize=8)
def _reject_action(reject_text: str) -> str:
    text = reject_text.strip()
    if text.startswith(POSTFIX_PREFIX):  # said in full in the config: do not say it twice
        text = text[len(POSTFIX_PREFIX):].strip()
    return f"550 5.1.1 {text}"


def unknown_accept(ctx: Context) -> str | None:
    """discard / redirect / redirect-domain: accepted; the content filter acts per recipient."""
    return DUNNO if ctx.resolution.kind is Kind.UNKNOWN else None


def disabled(ctx: Context) -> str | None:
    mailbox = ctx.resolution.mailbox
    if mailbox is not None and not mailbox.enabled:
        return f"{DISABLED.code} {DISABLED.dsn} {DISABLED.text}"
    return None


def quota(ctx: Context) -> str | None:
    """Full already, or MAIL FROM SIZE= would not fit; only for mailboxes that store mail.
    The only rule that reads the request, and only with a usage reading (see _plan)."""
    mailbox = ctx.resolution.mailbox
    used = ctx.used
    if mailbox is None or mailbox.max_size is None or used is None:
        return None
    if exceeds_quota(used, ctx.request.size, mailbox.max_size):
        return str(quota_reply(ctx.policy.quota_code))
    return None


def default(ctx: Context) -> str | None:
    return DUNNO


RULES: tuple[tuple[str, Rule], ...] = (
    ("not-ours", not_ours),
    ("unknown-reject", unknown_reject),
    ("unknown-accept", unknown_accept),
    ("disabled", disabled),
    ("quota", quota),
    ("default", default),
)


def _first(request: Request, resolution: Resolution, used: int | None, policy: Policy,
           ) -> Decision:
    ctx = Context(request, resolution, policy, used)
    for name, rule in RULES:
        action = rule(ctx)
        if action is not None:
            return Decision(action, name)
    return Decision(DUNNO, "default")  # pragma: no cover - `default` always decides


NOT_RCPT = Decision(DUNNO, "not-rcpt")
NO_RECIPIENT = Decision(DUNNO, "no-recipient")
END_OF_MESSAGE = "END-OF-MESSAGE"
# Headers added after Postfix measured `size` (Received, Authentication-Results, our trace,
# Return-Path, Delivered-To): counted at end of data so LMTP never refuses what we let in.
ADDED_HEADERS_ALLOWANCE = 2048


def _no_lookup(request: Request) -> Decision | None:
    """Requests decided without looking anything up (only RCPT with a recipient and
    END-OF-MESSAGE with recipients are asked)."""
    if request.protocol_state == END_OF_MESSAGE:
        return None if request.recipients else NO_RECIPIENT
    if request.protocol_state != "RCPT":
        return NOT_RCPT
    if not request.recipient:
        return NO_RECIPIENT
    return None


def _needs_usage(resolution: Resolution) -> Mailbox | None:
    mailbox = resolution.mailbox
    if (mailbox is not None and mailbox.enabled and mailbox.max_size is not None
            and mailbox.saves_locally):
        return mailbox
    return None


# _plan() per Resolution object: id -> (the resolution, the policy, the mailbox whose usage
# decides, or else the decision). An entry holds its Resolution, so the id is not reused while
# it is here; the directory cache makes new Resolution objects when the store changes, so an
# entry never answers for newer data.
_PLANS: dict[int, tuple[Resolution, Policy, Mailbox | None, Decision | None]] = {}
MAX_PLANS = 16384  # bounds the memory of Resolutions kept here after the cache dropped them


def _plan(request: Request, resolution: Resolution, policy: Policy,
          ) -> tuple[Mailbox | None, Decision | None]:
    """(the mailbox whose usage is needed, None) when a quota applies; else (None, the
    decision). Without a usage reading the rules look at the resolution and the policy only,
    so that decision is made once per Resolution object (the request asked first is passed
    but not read), not for every request."""
    hit = _PLANS.get(id(resolution))
    if hit is not None and hit[0] is resolution and hit[1] is policy:
        return hit[2], hit[3]
    mailbox = _needs_usage(resolution)
    decision = _first(request, resolution, None, policy) if mailbox is None else None
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[id(resolution)] = (resolution, policy, mailbox, decision)
    return mailbox, decision


async def decide(request: Request, resolver: Resolver, usage: UsageFn, policy: Policy,
                 ) -> Decision:
    """The first decisive rule wins. Only RCPT requests with a recipient are looked at."""
    early = _no_lookup(request)
    if early is not None:
        return early
    if request.protocol_state == END_OF_MESSAGE:
        return await decide_end_of_message(request, resolver, usage, policy)
    resolution = await resolver(request.recipient)
    mailbox, decision = _plan(request, resolution, policy)
    if mailbox is None:
        assert decision is not None
        return decision
    return _first(request, resolution, await usage(mailbox), policy)


def decide_now(request: Request, resolver: PeekResolver, usage: PeekUsage | None,
               policy: Policy) -> Decision | None:
    """decide() without waiting, from what is known already (cached lookups, a fresh quota
    reading); None when an answer needs I/O (then decide() is the way)."""
    early = _no_lookup(request)
    if early is not None:
        return early
    if request.protocol_state == END_OF_MESSAGE:
        return None  # reads the usage of each recipient's mailbox: decide() does it
    resolution = resolver(request.recipient)
    if resolution is None:
        return None
    mailbox, decision = _plan(request, resolution, policy)
    if mailbox is None:
        return decision
    if usage is None:
        return None
    used = usage(mailbox)
    if used is None:
        return None
    return _first(request, resolution, used, policy)


async def decide_end_of_message(request: Request, resolver: Resolver, usage: UsageFn,
                                policy: Policy) -> Decision:
    """smtpd_end_of_data_restrictions: Postfix now knows the real size, also when the client
    announced none with SIZE=. A message that does not fit a recipient's mailbox is refused
    here, in the client's session, so LMTP never has to refuse it (that would bounce)."""
    sized = dataclasses.replace(request, size_text=str(request.size + ADDED_HEADERS_ALLOWANCE))
    for rcpt in request.recipients:
        resolution = (await resolver(rcpt)).final
        if resolution.kind is not Kind.MAILBOX or _needs_usage(resolution) is None:
            continue
        assert resolution.mailbox is not None
        action = quota(Context(sized, resolution, policy, await usage(resolution.mailbox)))
        if action is not None:
            return Decision(f"{action} <{rcpt}>", "quota-end-of-data")
    return Decision(DUNNO, "end-of-data")
