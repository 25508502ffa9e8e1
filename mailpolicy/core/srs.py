"""SRS codec: the secret, forward and reverse rewriting in our SRS domain (srslib)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import srslib

from mailpolicy.config import Config
from mailpolicy.core.addresses import AddressError, normalize_domain, split_address

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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd) as f:
        if os.fstat(fd).st_mode & 0o077:  # a copy or an old file readable by others
            os.fchmod(fd, 0o600)
        secret = f.read().strip()
    if not secret:
        raise ValueError(f"{path}: empty SRS secret")
    return secret


def postfix_myhostname() -> str | None:
    """Postfix's myhostname (`postconf -h myhostname`), None when Postfix cannot say."""
    import subprocess

    try:
        res = subprocess.run(["postconf", "-h", "myhostname"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    name = res.stdout.strip()
    return name if res.returncode == 0 and name else None


def host_fqdn() -> str:
    import socket

    return socket.getfqdn()


def srs_domain(cfg: Config) -> str:
    """The SRS domain: filter.srs_domain, else Postfix's myhostname, else the host's FQDN.
    A configured name must be fully qualified (a bare host name collides with Debian's default
    mydestination and makes SRS bounces unroutable): ConfigError naming the key otherwise.
    Unset, on a host whose names are not qualified (the embedded default on a bare machine),
    it is `<host>.localhost` (RFC 6761: never routable) and `unqualified_default()` says so."""
    from mailpolicy.config import ConfigError

    name = cfg.filter.srs_domain or _default_srs_domain()
    if _qualified(name):
        return normalize_domain(name)
    if not cfg.filter.srs_domain:
        label = (name.split(".")[0] or "mailpolicy").lower()
        return f"{label if re.fullmatch(r'[a-z0-9-]{1,63}', label) else 'mailpolicy'}.localhost"
    raise ConfigError(
        f"filter.srs_domain: {name!r} (as configured) is not a fully qualified domain name; "
        "set filter.srs_domain to this host's public mail name, e.g. mx.example.com")


def unqualified_default(cfg: Config) -> str | None:
    """The warning for a start without a qualified SRS domain (None when there is one)."""
    if cfg.filter.srs_domain or _qualified(_default_srs_domain()):
        return None
    return (f"no fully qualified name for SRS (Postfix's myhostname, else the host name, is "
            f"{_default_srs_domain()!r}): forwarded copies use {srs_domain(cfg)!r}, which no "
            "one can route bounces to; set filter.srs_domain to this host's public mail name")


def _qualified(name: str) -> bool:
    try:
        folded = normalize_domain(name)
    except AddressError:
        return False
    return "." in folded and not folded.endswith((".localdomain", ".localhost"))


_DEFAULT: list[str] = []


def _default_srs_domain() -> str:
    if not _DEFAULT:  # asked once per process
        _DEFAULT.append(postfix_myhostname() or host_fqdn())
    return _DEFAULT[0]


class Srs:
    """Sender Rewriting Scheme in our SRS domain (srslib: SRS0/SRS1, hash, 21-day timestamps)."""

    def __init__(self, secret: str, domain: str) -> None:
        self.domain = normalize_domain(domain) if "." in domain else domain.lower()
        self._srs = srslib.SRS(secret)

    @classmethod
    def from_config(cls, cfg: Config) -> Srs:
        return cls(load_secret(cfg), srs_domain(cfg))

    def forward(self, sender: str) -> str | None:
        """The SRS address standing for `sender` (None when it cannot be rewritten)."""
        try:
            return str(self._srs.forward(sender, self.domain))
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
            return str(self._srs.reverse(address.strip().strip("<>")))
        except srslib.Error:
            return None
