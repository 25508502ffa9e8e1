"""SRS for forwarded copies: the secret, forward/reverse rewriting, and the two filter steps."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import srslib
import structlog

from ..addresses import AddressError, normalize_domain, split_address
from ..replies import Reply

if TYPE_CHECKING:
    from ..config import Config
    from ..directory import Directory
    from .pipeline import Transaction

log = structlog.get_logger("mailpolicy.filter")

_SRS_LOCAL = re.compile(r"^SRS[01][-+=]", re.IGNORECASE)


def load_secret(cfg: Config) -> str:
    """cfg.filter.srs_secret, else {state_dir}/srs.secret, created once (mode 0600)."""
    if cfg.filter.srs_secret:
        return cfg.filter.srs_secret
    path = Path(cfg.state_dir) / "srs.secret"
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{path}: empty SRS secret")
    return secret


class Srs:
    """Sender Rewriting Scheme in our SRS domain (srslib: SRS0/SRS1, hash, 21-day timestamps)."""

    def __init__(self, secret: str, domain: str) -> None:
        self.domain = normalize_domain(domain) if "." in domain else domain.lower()
        self._srs = srslib.SRS(secret)

    @classmethod
    def from_config(cls, cfg: Config) -> Srs:
        return cls(load_secret(cfg), cfg.filter.srs_domain or cfg.hostname)

    def forward(self, sender: str) -> str | None:
        """The SRS address standing for `sender` (None when it cannot be rewritten)."""
        try:
            return self._srs.forward(sender, self.domain)
        except srslib.Error:
            return None

    def is_ours(self, address: str) -> bool:
        """Whether `address` looks like an SRS0/SRS1 address in our SRS domain."""
        try:
            local, domain = split_address(address)
        except AddressError:
            return False
        return domain.rstrip(".").lower() == self.domain and bool(_SRS_LOCAL.match(local))

    def reverse(self, address: str) -> str | None:
        """Where a bounce to our SRS address goes (the original sender), or None when the
        address is not ours, forged or expired. Socketmap-compatible: key in, data or None."""
        if not self.is_ours(address):
            return None
        try:
            return self._srs.reverse(address.strip().strip("<>"))
        except srslib.Error:
            return None


class SrsReverseStep:
    """Recipients that are our SRS addresses (bounces of forwarded mail) go back to the
    original sender; forged or expired ones are removed and logged."""

    name = "srs-reverse"

    def __init__(self, srs: Srs) -> None:
        self.srs = srs

    async def __call__(self, tx: Transaction) -> Reply | None:
        out: list[str] = []
        for rcpt in tx.rcpt_tos:
            if not self.srs.is_ours(rcpt):
                out.append(rcpt)
                continue
            original = self.srs.reverse(rcpt)
            if original is None:
                log.warning("srs.invalid_recipient_removed", id=tx.id, queue_id=tx.queue_id,
                            rcpt=rcpt)
                continue
            log.info("srs.reversed", id=tx.id, queue_id=tx.queue_id, rcpt=rcpt, to=original)
            if original not in out:
                out.append(original)
        tx.rcpt_tos = out
        return None


class SrsStep:
    """Envelope sender of copies forwarded to external domains → SRS address in our domain,
    so SPF passes at the receiver. Null senders and senders of our own domains are kept."""

    name = "srs"

    def __init__(self, srs: Srs, directory: Directory) -> None:
        self.srs = srs
        self.directory = directory

    async def __call__(self, tx: Transaction) -> Reply | None:
        external = set(tx.notes.get("forwarded_external", ()))
        targets = [r for r in tx.rcpt_tos if r in external]
        if not targets or not tx.mail_from:
            return None
        try:
            _, sender_domain = split_address(tx.mail_from)
            if await self.directory.get_domain(normalize_domain(sender_domain)) is not None:
                return None  # our own domain: SPF passes from our addresses as it is
        except AddressError:
            pass
        new = self.srs.forward(tx.mail_from)
        if new is None:
            log.warning("srs.cannot_rewrite", id=tx.id, queue_id=tx.queue_id,
                        sender=tx.mail_from)
            return None
        for r in targets:
            tx.senders[r] = new
        log.info("srs.rewritten", id=tx.id, queue_id=tx.queue_id, sender=tx.mail_from,
                 srs=new, rcpts=",".join(targets))
        return None
