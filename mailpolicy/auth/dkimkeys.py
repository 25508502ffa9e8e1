"""A domain's DKIM keys in use: made on `domain add` (RSA 2048, optionally Ed25519), rotated to
a new selector, private keys as 0600 files under the state dir, and signing with them."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from mailpolicy.auth import signing
from mailpolicy.config import Config
from mailpolicy.core.addresses import AddressError, normalize_domain, split_address
from mailpolicy.core.dkimkey import DkimKey, current

log = structlog.get_logger("mailpolicy.dkim")

KEY_DIR = "dkim"  # under the state dir: dkim/<domain>/<selector>.key


def algorithms(cfg: Config) -> list[signing.Algorithm]:
    return ["rsa", "ed25519"] if cfg.dkim.ed25519 else ["rsa"]


def key_dir(cfg: Config, domain: str) -> Path:
    return cfg.state_dir / KEY_DIR / domain


def _selector(taken: set[str], now: float, algorithm: signing.Algorithm) -> str:
    base = signing.new_selector(datetime.fromtimestamp(now, UTC), algorithm)
    selector, n = base, 1
    while selector in taken:  # a second key of the same day
        n += 1
        selector = f"{base}{n}"
    return selector


def _write_key(directory: Path, selector: str, private: bytes) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{selector}.key"
    signing.write_private_key(path, private)
    return path


async def make_keys(cfg: Config, store: Any, domain: str, *, active_from: float | None = None,
                    retire_others_at: float | None = None, actor: str = "admin",
                    ) -> list[Any]:
    """A new key per configured algorithm for `domain` (files written first, then the rows);
    `active_from` None = signs now. Returns the store's new DkimKey rows."""
    now = time.time()
    taken = await store.dkim.selectors(domain)
    made = []
    for algorithm in algorithms(cfg):
        pair = await asyncio.to_thread(signing.generate_key, algorithm)
        selector = _selector(taken, now, algorithm)
        taken.add(selector)
        path = await asyncio.to_thread(_write_key, key_dir(cfg, domain), selector, pair.private)
        key = DkimKey(domain, selector, algorithm, pair.public_b64, str(path), now,
                      now if active_from is None else active_from)
        await store.dkim.add(key, retire_others_at=retire_others_at, actor=actor)
        made.append(key)
    log.info("dkim.keys_made", domain=domain, selectors=[k.selector for k in made],
             active_from=active_from)
    return made


async def rotate(cfg: Config, store: Any, domain: str, actor: str = "admin") -> list[Any]:
    """New selectors, published now, signing after dkim.rotation_delay_hours; the current
    keys stay published as long again, then are retired. A domain without a signing key
    gets one that signs at once."""
    delay = cfg.dkim.rotation_delay_hours * 3600
    now = time.time()
    if not current(await store.dkim.list(domain), now):  # none yet (a domain made before
        return await make_keys(cfg, store, domain, actor=actor)  # DKIM): sign at once
    return await make_keys(cfg, store, domain, active_from=now + delay,
                           retire_others_at=now + 2 * delay, actor=actor)


@functools.lru_cache(maxsize=1024)
def _read(path: str, mtime_ns: int) -> bytes:
    return signing.read_private_key(path)


def _private(path: str) -> bytes:
    return _read(path, os.stat(path).st_mtime_ns)


async def signing_keys(store: Any, domain: str, now: float | None = None,
                       ) -> list[signing.SigningKey]:
    """The keys that sign for `domain` now (RSA first), [] when it has none."""
    keys = current(await store.dkim.list(domain), time.time() if now is None else now)
    return [signing.SigningKey(k.domain, k.selector, k.algorithm, _private(k.key_file))
            for k in keys]


def author_domain(message: bytes) -> str | None:
    """The domain of the (single) From address of a message, None if there is none."""
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    froms = BytesHeaderParser().parsebytes(head).get_all("From") or []
    addrs = [a for _n, a in getaddresses([str(f) for f in froms]) if a]
    if len(addrs) != 1:
        return None
    try:
        return normalize_domain(split_address(addrs[0])[1])
    except AddressError:
        return None


async def sign(store: Any, message: bytes, domain: str | None = None) -> bytes:
    """`message` with DKIM-Signature(s) of `domain` (default: the From domain) prepended; the
    message unchanged when the domain has no key. Raises signing.SigningError."""
    domain = domain or author_domain(message)
    if domain is None:
        return message
    keys = await signing_keys(store, domain)
    if not keys:
        return message
    return signing.dkim_sign(message, keys) + message


async def arc_chain(message: bytes, resolver: Any) -> signing.ChainValidation:
    """The ARC chain verdict of a received message (cv= of the set we add), keys fetched
    through our resolver first (dkimpy's verifier then runs in a thread)."""
    from mailpolicy.auth import dkim as verify

    pairs = verify.arc_sealers(message)
    if not pairs:
        return "none"
    names = sorted({f"{s}._domainkey.{d}".lower() for d, s in pairs})
    fetched = await asyncio.gather(*(verify._fetch_key(resolver, n) for n in names))
    keys = {n: k for n, k in zip(names, fetched, strict=True) if isinstance(k, bytes)}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").lower().rstrip("."))

    cv, _reason = await asyncio.to_thread(signing.arc_verify, message, dnsfunc)
    return cv


async def arc_seal(store: Any, message: bytes, domain: str, srv_id: str, auth_results: str,
                   chain: signing.ChainValidation) -> bytes:
    """The ARC set of `domain`'s RSA key for `message` (b"" when the domain has no RSA key).
    Raises signing.SigningError."""
    keys = [k for k in await signing_keys(store, domain) if k.algorithm == "rsa"]
    if not keys:
        return b""
    return await asyncio.to_thread(signing.arc_seal, message, keys[0], srv_id, auth_results,
                                   chain)
