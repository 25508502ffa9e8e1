"""Recipient rewriting: aliases, copies, do-not-save, unknown-recipient actions, loop guards."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from mailpolicy.core.directory import Directory, Kind, Resolution, resolve
from mailpolicy.core.model import DefaultAction, Mailbox
from mailpolicy.core.replies import LOOP, Reply
from mailpolicy.smtp.pipeline import Header, Transaction

log = structlog.get_logger("mailpolicy.filter")

TRACE_HEADER = "X-Mailpolicy-Trace"
MAX_EXPANSION = 1000  # addresses resolved per message (Postfix: virtual_alias_expansion_limit)
MAX_DEPTH = 20  # copy-of-a-copy nesting
_ADDR_RE = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True, slots=True)
class Event:
    """One logged decision: what happened to which address, and why."""

    action: str  # deliver | forward | discard | loop | keep | redirect | limit | drop
    address: str
    detail: str = ""


@dataclass(slots=True)
class Plan:
    """The new recipient list and what to log; `external` are forwarded to foreign domains
    (`forwarded_by`: the domain of ours that forwards each);
    `nowhere` lead nowhere (the whole message is deferred, never accepted and dropped)."""

    recipients: list[str] = field(default_factory=list)
    external: set[str] = field(default_factory=set)
    forwarded_by: dict[str, str] = field(default_factory=dict)  # external -> our domain
    forwarded_for: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    forward_only: list[Mailbox] = field(default_factory=list)  # do-not-save, reached by copies
    nowhere: list[str] = field(default_factory=list)  # addresses with no destination: defer


# ------------------------------------------------------------------ header facts (pure)
def trace_passes(headers: Sequence[Header], hostname: str) -> int:
    """How many times this filter (by `hostname`) already passed the message on."""
    want = f"by {hostname.lower()};"
    return sum(1 for h in headers if h.name == TRACE_HEADER.lower()
               and h.value.lower().startswith(want))


def already_forwarded(headers: Sequence[Header]) -> set[str]:
    """Addresses whose forwarding already happened: our trace header's `forwarded=<...>` list
    and every Delivered-To, lower-cased."""
    out: set[str] = set()
    for h in headers:
        if h.name == TRACE_HEADER.lower():
            _, _, fwd = h.value.partition("forwarded=")
            out.update(a.lower() for a in _ADDR_RE.findall(fwd))
        elif h.name == "delivered-to":
            out.add(h.value.strip().strip("<>").lower())
    return out


def trace_value(hostname: str, tx_id: str, forwarded: Sequence[str]) -> str:
    value = f"by {hostname}; id={tx_id}"
    if forwarded:
        value += "; forwarded=" + " ".join(f"<{a}>" for a in forwarded)
    return value


# ------------------------------------------------------------------ the decision (pure)
def copy_targets(mailbox: Mailbox) -> list[str]:
    """A mailbox's copies-to as full addresses (bare names are of the mailbox's domain)."""
    return [c if "@" in c else f"{c}@{mailbox.domain}" for c in mailbox.copies_to]


def plan_recipients(rcpts: Sequence[str], resolutions: Mapping[str, Resolution],
                    forwarded_before: set[str] = frozenset()) -> Plan:  # type: ignore[assignment]
    """Rewrite the envelope recipients. `resolutions` maps each envelope recipient and each
    copy target to resolve()'s answer; `forwarded_before` are addresses whose forwarding this
    message already went through (loop guard). Never drops mail that has a real destination."""
    plan = Plan()
    seen: set[str] = set()  # lower-cased recipients already in plan.recipients
    mailboxes: set[str] = set()  # mailbox addresses already expanded

    def add(address: str, external: bool = False, via: str = "") -> bool:
        key = address.lower()
        if key not in seen:
            seen.add(key)
            plan.recipients.append(address)
            if external:
                plan.external.add(address)
                plan.forwarded_by[address] = via.rpartition("@")[2]
        return True

    def defer(address: str, why: str) -> bool:
        """The address leads nowhere now (the store changed after RCPT): the message waits."""
        plan.events.append(Event("defer", address, why))
        plan.nowhere.append(address)
        return True

    def expand(r: Resolution, given: str, via: str | None, depth: int) -> bool:
        """Route one resolved address; True when it reaches (or already reached) a destination."""
        if r.kind in (Kind.FOREIGN, Kind.INVALID):
            if via is None:
                return add(given)
            plan.events.append(Event("forward", r.address, f"for {via}"))
            return add(r.address, external=r.kind is Kind.FOREIGN, via=via)
        if r.kind is Kind.MAILBOX:
            return expand_mailbox(r, given, via, depth)
        action = r.action
        if action is DefaultAction.DISCARD:
            plan.events.append(Event("discard", r.address, "unknown in a discard domain"))
            return False
        if r.redirect is None:  # reject domain (the policy service refuses it at RCPT)
            return defer(r.address, f"unknown, domain action {action}")
        final = r.final
        if final.kind is Kind.UNKNOWN:
            if final.action is DefaultAction.DISCARD and not r.loop:
                plan.events.append(Event("discard", r.address,
                                         f"redirect ends at discarded {final.address}"))
                return False
            return defer(r.address, "redirect loop" if r.loop
                         else f"redirect ends at unknown {final.address}")
        if final.kind is Kind.MAILBOX and final.mailbox is not None \
                and not final.mailbox.enabled:
            return defer(r.address, f"redirect ends at disabled {final.address}")
        if final.kind is not Kind.MAILBOX:  # a foreign address: forwarding leaves us
            if r.address in forwarded_before:
                plan.events.append(Event("loop", r.address,
                                         f"already redirected to {final.address}, not again"))
                return True  # it was sent there before: the destination has it
            plan.forwarded_for.append(r.address)
        plan.events.append(Event("redirect", r.address, f"to {final.address}"))
        return expand(final, final.address, r.address, depth + 1)

    def expand_mailbox(r: Resolution, given: str, via: str | None, depth: int) -> bool:
        mb = r.mailbox
        assert mb is not None
        key = mb.address
        if key in mailboxes:
            return True
        mailboxes.add(key)
        target = f"{mb.name}+{r.extension}@{mb.domain}" if r.extension else key
        if not mb.enabled:
            if via is not None:
                plan.events.append(Event("discard", target, f"copy for {via}: mailbox disabled"))
                return False
            plan.events.append(Event("keep", target, "mailbox disabled"))
            return add(target)
        copies = copy_targets(mb)
        if r.via_alias or target != given:
            plan.events.append(Event("deliver", target, f"for {given}"))
        if not copies:
            return add(target)
        if key in forwarded_before:
            plan.events.append(Event("loop", key, "copies already forwarded once, "
                                                  "delivering locally only"))
            return add(target)
        if depth >= MAX_DEPTH:
            plan.events.append(Event("limit", key, "copy nesting too deep, delivering locally"))
            return add(target)
        if mb.saves_locally:
            add(target)
        plan.forwarded_for.append(key)
        reached = False
        for c in copies:
            cr = resolutions.get(c)
            if cr is None:
                plan.events.append(Event("limit", c, "expansion limit, copy kept as is"))
                reached = add(c) or reached
                continue
            reached = expand(cr, c, key, depth + 1) or reached
        if not mb.saves_locally and not reached:  # LMTP would accept it and store nothing
            return defer(target, "do-not-save but no copy has a destination now")
        if not mb.saves_locally:
            plan.forward_only.append(mb)  # never reaches LMTP: autoreply from the filter
        return True

    for rcpt in rcpts:
        r = resolutions.get(rcpt)
        if r is None:
            plan.events.append(Event("keep", rcpt, "not resolved"))
            add(rcpt)
            continue
        expand(r, rcpt, None, 0)
    if not plan.recipients and not plan.nowhere:
        plan.events.append(Event("drop", ",".join(rcpts), "every recipient discarded"))
    return plan


# ------------------------------------------------------------------ thin I/O
async def collect(directory: Directory, rcpts: Sequence[str],
                  limit: int = MAX_EXPANSION) -> dict[str, Resolution]:
    """resolve() every envelope recipient and, transitively, every copy target (bounded)."""
    out: dict[str, Resolution] = {}
    queue = list(rcpts)
    i = 0
    while i < len(queue) and len(out) < limit:
        address = queue[i]
        i += 1
        if address in out:
            continue
        r = await resolve(directory, address)
        out[address] = r
        final = r.final
        if final.kind is Kind.MAILBOX and final.mailbox is not None and final.mailbox.enabled:
            queue.extend(c for c in copy_targets(final.mailbox) if c not in out)
    return out


class HopStep:
    """Loop guard: a message this filter already passed on `max_passes` times is deferred."""

    name = "hops"

    def __init__(self, hostname: str, max_passes: int) -> None:
        self.hostname = hostname
        self.max_passes = max_passes

    async def __call__(self, tx: Transaction) -> Reply | None:
        passes = trace_passes(tx.headers, self.hostname)
        if passes >= self.max_passes:
            log.error("filter.mail_loop_deferred", id=tx.id, queue_id=tx.queue_id,
                      passes=passes, max_passes=self.max_passes, sender=tx.mail_from or "<>",
                      rcpts=",".join(tx.rcpt_tos))
            return LOOP
        return None


class RewriteStep:
    """THE recipient rewrite step: plan_recipients() over resolve() answers, plus the trace."""

    name = "rewrite"

    def __init__(self, directory: Directory, hostname: str) -> None:
        self.directory = directory
        self.hostname = hostname

    async def __call__(self, tx: Transaction) -> Reply | None:
        resolutions = await collect(self.directory, tx.rcpt_tos)
        plan = plan_recipients(tx.rcpt_tos, resolutions, already_forwarded(tx.headers))
        for e in plan.events:
            emit = log.warning if e.action in ("loop", "limit", "drop", "defer") else log.info
            emit(f"rewrite.{e.action}", id=tx.id, queue_id=tx.queue_id, address=e.address,
                 detail=e.detail)
        if plan.nowhere:  # the store changed since RCPT: Postfix keeps it and retries
            more = f" (and {len(plan.nowhere) - 1} more)" if len(plan.nowhere) > 1 else ""
            return Reply(451, "4.1.1", f"<{plan.nowhere[0]}>{more} has no destination now, "
                                       "try again later")
        tx.rcpt_tos = plan.recipients
        tx.notes["forwarded_external"] = plan.external
        tx.notes["forwarded_by"] = plan.forwarded_by
        tx.notes["forward_only"] = plan.forward_only
        tx.add_header(TRACE_HEADER, trace_value(self.hostname, tx.id, plan.forwarded_for))
        if not plan.recipients:
            return Reply(250, "2.0.0", "Ok: every recipient is discarded, message dropped")
        return None
