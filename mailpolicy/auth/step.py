"""The filter's `dmarc` step: SPF + DKIM + DMARC, Authentication-Results, per-domain enforcement.

The filter (``mailpolicy.smtp.server.Filter``) runs it after ``hops`` and ``srs-reverse`` and
before ``rewrite``: the checks need the recipients as the client sent them. Each enforcement is
logged at info as ``dmarc.enforced`` with the queue id and the action taken.

What it does to a Transaction:
- strips incoming Authentication-Results fields that claim our authserv-id and every incoming
  ``X-Mailpolicy-Quarantine`` field (so a sender can never forge either), then prepends one
  ``Authentication-Results:`` field (spf=, dkim= per signature, dmarc= (p=… dis=…) header.from=);
- enforces only when a recipient's domain has DMARC on (Domain.dmarc), and never for clients in
  ``dmarc.trusted_forwarders`` or mail whose validated ARC chain was sealed only by
  ``dmarc.trusted_arc_sealers``:
  - before-queue: a ``reject`` disposition answers ``550 5.7.1`` naming the From domain;
    a ``quarantine`` disposition adds the quarantine marker below;
  - after-queue (never a bounce): a reject or quarantine disposition adds the marker, or, with
    ``dmarc.after_queue_action = "discard"``, drops the recipients of DMARC-enabled domains;
  - ``dmarc=temperror``: ``dmarc.temperror_action`` ("accept", or "defer" = 451 4.7.0).

The marker is the header ``X-Mailpolicy-Quarantine: <verdict>`` (e.g. ``dmarc=fail (p=reject
dis=reject) header.from=example.com``). The LMTP server delivers such mail into the mailbox's
``.Junk`` folder, and the autoresponder must not answer mail that carries it (it failed DMARC
with a reject or quarantine disposition). The marker is per message: in one transaction that also
has recipients in DMARC-off domains, their copies carry it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field

import structlog

from mailpolicy.auth import dkim as dkim_mod
from mailpolicy.auth import dmarc as dm
from mailpolicy.auth.dns import DnsTempError, Resolver
from mailpolicy.auth.results import HEADER as AR_HEADER
from mailpolicy.auth.results import build, claims_our_id
from mailpolicy.auth.spf import SpfResult, check_spf, client_ip
from mailpolicy.config import Config
from mailpolicy.core.addresses import AddressError, normalize_domain
from mailpolicy.core.directory import Directory
from mailpolicy.core.replies import Reply

log = structlog.get_logger("mailpolicy.dmarc")

QUARANTINE_HEADER = "X-Mailpolicy-Quarantine"


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    spf: SpfResult
    dkim: list[dkim_mod.DkimResult] = field(default_factory=list)
    dmarc: dm.DmarcResult = field(default_factory=lambda: dm.DmarcResult("none"))


def txt_lookup(resolver: Resolver) -> dm.Lookup:
    async def lookup(name: str) -> dm.Txt:
        try:
            ans = await resolver.txt(name)
        except DnsTempError:
            return dm.Txt("temperror")
        return dm.Txt(ans.status, tuple(ans.texts()))
    return lookup


def domain_exists(resolver: Resolver) -> dm.Exists:
    """A domain is non-existent (for np=) when A, AAAA and MX all give NXDOMAIN or NODATA."""
    async def exists(domain: str) -> bool | None:
        try:
            for rtype in ("A", "AAAA", "MX"):
                ans = await resolver.query(domain, rtype)
                if ans.status == "nxdomain":
                    return False  # RFC 8020: nothing exists at or below it
                if ans.status == "ok":
                    return True
        except DnsTempError:
            return None
        return False
    return exists


async def authenticate(resolver: Resolver, message: bytes, from_values: list[str],
                       mail_from: str, client: str | None, helo: str, *,
                       receiver: str = "mailpolicy",
                       executor: Executor | None = None) -> AuthVerdict:
    """SPF and DKIM concurrently, then DMARC over their results."""
    spf, dkims = await asyncio.gather(
        check_spf(resolver, client_ip(client), mail_from, helo, receiver=receiver),
        dkim_mod.verify_all(message, resolver, executor=executor))
    result = await dm.evaluate(
        from_values, dm.Identifier(spf.result, spf.domain),
        [dm.Identifier(d.result, d.domain) for d in dkims],
        txt_lookup(resolver), domain_exists(resolver))
    return AuthVerdict(spf, dkims, result)


def verdict_text(d: dm.DmarcResult) -> str:
    return f"dmarc={d.result} (p={d.policy} dis={d.disposition}) header.from={d.domain or '-'}"


class DmarcStep:
    """Pipeline step `dmarc` (see the module docstring)."""

    name = "dmarc"

    def __init__(self, cfg: Config, store: Directory, resolver: Resolver | None = None,
                 ) -> None:
        self.store = store
        self.resolver = resolver or Resolver.from_config(cfg)
        self.configure(cfg)
        n = cfg.dmarc.verify_processes
        self.executor: ProcessPoolExecutor | None = None
        if n > 0:  # spawn, not fork: the daemon has threads and an event loop
            self.executor = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))

    def configure(self, cfg: Config) -> None:
        """Take a (reloaded) config: DMARC settings apply from the next message; a change of
        [dns] gets a new resolver; the verification processes stay (their number needs a
        restart)."""
        if getattr(self, "cfg", cfg).dns != cfg.dns:
            self.resolver = Resolver.from_config(cfg)
        self.cfg = cfg
        self.authserv_id = cfg.dmarc.authserv_id or cfg.hostname
        self.forwarders = [ipaddress.ip_network(n, strict=False)
                           for n in cfg.dmarc.trusted_forwarders]
        self.sealers = {s.lower().rstrip(".") for s in cfg.dmarc.trusted_arc_sealers}

    def close(self) -> None:
        """Stop the verification processes (if any); call on shutdown."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    async def __call__(self, tx) -> Reply | None:
        authserv = self.authserv_id
        # strip rules only when needed: any rule makes the pipeline rebuild the header block
        if any(h.name == "authentication-results" and claims_our_id(h.value, authserv)
               for h in tx.headers):
            tx.strip_if.append(lambda h: h.name == "authentication-results"
                               and claims_our_id(h.value, authserv))
        if any(h.name == QUARANTINE_HEADER.lower() for h in tx.headers):
            tx.strip_headers.add(QUARANTINE_HEADER.lower())
        helo = tx.client_helo or ""
        try:
            async with asyncio.timeout(self.cfg.dmarc.check_deadline_seconds):
                v = await authenticate(self.resolver, tx.content, tx.header_values("from"),
                                       tx.mail_from, tx.client_address, helo,
                                       receiver=authserv, executor=self.executor)
        except TimeoutError:
            v = AuthVerdict(SpfResult("temperror", "mailfrom", "", tx.mail_from, "deadline"),
                            [], dm.DmarcResult("temperror", reason="check deadline passed"))
        tx.notes["auth"] = v
        tx.notes["dmarc"] = v.dmarc
        d = v.dmarc
        reply, applied, sealer = await self._enforce(tx, d)
        if (action := tx.notes.get("dmarc_action")) is not None:
            log.info("dmarc.enforced", id=tx.id, queue_id=tx.queue_id, result=d.result,
                     policy=d.policy, disposition=d.disposition, applied=applied,
                     header_from=d.domain or "-", action=action, mode=tx.mode,
                     sealer=sealer or "-", rcpts=",".join(tx.notes.get("dmarc_enforced", ())))
        shown = d if applied == d.disposition else dataclasses.replace(d, disposition=applied)
        tx.add_header(AR_HEADER, build(authserv, v.spf, v.dkim, shown, arc_sealer=sealer))
        if applied == "quarantine":
            tx.add_header(QUARANTINE_HEADER, verdict_text(shown))
        return reply

    async def _enforce(self, tx, d: dm.DmarcResult) -> tuple[Reply | None, str, str | None]:
        """(the reply, the disposition actually applied, the trusted ARC sealer that
        overrode a failure): what Authentication-Results and the marker then report."""
        if d.result not in ("fail", "temperror") or (d.result == "fail" and
                                                       d.disposition == "none"):
            return None, d.disposition, None
        enforced = await self._enforced_rcpts(tx.rcpt_tos)
        if not enforced:
            return None, "none", None  # no recipient's domain enforces DMARC
        tx.notes["dmarc_enforced"] = enforced
        notes = tx.notes
        if d.result == "temperror":
            if self.cfg.dmarc.temperror_action == "defer":
                notes["dmarc_action"] = "defer"
                return Reply(451, "4.7.0", f"DMARC check for {d.domain or 'the sender'}"
                             " failed temporarily, try again later"), d.disposition, None
            notes["dmarc_action"] = "accept"
            return None, d.disposition, None
        trusted, sealer = await self._trusted(tx)
        if trusted:
            tx.notes["dmarc_override"] = f"arc:{sealer}" if sealer else "trusted_forwarder"
            notes["dmarc_action"] = "trusted"
            return None, "none", sealer
        if tx.mode == "before-queue" and d.disposition == "reject":
            notes["dmarc_action"] = "reject"
            return (Reply(550, "5.7.1", f"Message rejected by DMARC policy for {d.domain}"),
                    "reject", None)
        if tx.mode != "before-queue" and self.cfg.dmarc.after_queue_action == "discard":
            gone = set(enforced)
            tx.rcpt_tos[:] = [r for r in tx.rcpt_tos if r not in gone]
            tx.notes["dmarc_discarded"] = sorted(gone)
            notes["dmarc_action"] = "discard"
            if not tx.rcpt_tos:
                return Reply(250, "2.0.0", "Ok, discarded by DMARC policy"), "reject", None
            return None, "none", None  # the copies left are for domains that do not enforce
        notes["dmarc_action"] = "quarantine"
        return None, "quarantine", None  # after-queue never rejects (no bounce): quarantine

    async def _enforced_rcpts(self, rcpts: list[str]) -> list[str]:
        """Recipients whose domain has DMARC on."""
        on: dict[str, bool] = {}
        out = []
        for r in rcpts:
            try:
                dom = normalize_domain(r.strip("<>").rpartition("@")[2])
            except AddressError:
                continue
            if dom not in on:
                domain = await self.store.get_domain(dom)
                on[dom] = bool(domain is not None and domain.dmarc)
            if on[dom]:
                out.append(r)
        return out

    async def _trusted(self, tx) -> tuple[bool, str | None]:
        """(trusted, the ARC sealer when that is why): a trusted forwarder's client address,
        or a valid ARC chain sealed only by trusted sealers."""
        ip = client_ip(tx.client_address)
        if ip is not None and any(ipaddress.ip_address(ip) in n for n in self.forwarders):
            return True, None
        if self.sealers:
            sealer = await dkim_mod.arc_trusted_sealer(tx.content, self.resolver, self.sealers)
            return sealer is not None, sealer
        return False, None
