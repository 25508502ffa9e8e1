"""DKIM: verify every DKIM-Signature (dkimpy, in a thread) with keys fetched by our resolver."""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import Executor
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from mailpolicy.auth import dkim_rsa
from mailpolicy.auth.dns import DnsTempError, Resolver

dkim_rsa.install()  # RSA verification in C (cryptography) instead of dkimpy's pure Python

MAX_SIGNATURES = 10  # signatures verified per message; the rest get "policy" (a DoS guard)
MIN_KEY_BITS = 1024
# A message this small with this few signatures is verified on the event loop (~0.25 ms per
# 2 KB signature, ~0.4 ms at 16 KB): a thread hop costs more CPU than that (GIL hand-offs)
INLINE_MAX_BYTES = 16 * 1024
INLINE_MAX_SIGNATURES = 2
_HEADER_END = re.compile(rb"\r?\n\r?\n")

_log = logging.getLogger("mailpolicy.auth.dkim")
_log.addHandler(logging.NullHandler())
_log.propagate = False  # dkimpy logs every verification failure at error level


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The outcome for one signature (RFC 8601 dkim result values)."""

    result: str  # pass fail neutral policy temperror permerror
    domain: str = ""  # d= (lowercase)
    selector: str = ""  # s=
    auid: str = ""  # i=
    algorithm: str = ""  # a=
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Sig:
    index: int
    domain: str
    selector: str
    auid: str
    algorithm: str
    error: str = ""

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def header_block(message: bytes) -> bytes:
    """The message's header block with the empty line after it: all that signature lists need
    (dkimpy's parser splits the whole message into lines, ~2.5 times its size)."""
    if message[:1] == b"\n" or message[:2] == b"\r\n":  # (also for an mmap)
        return b""
    m = _HEADER_END.search(message)
    return message[: m.end()] if m else message


def parse_signatures(message: bytes) -> list[_Sig]:
    """The DKIM-Signature headers in order, with their d=/s=/i=/a= tags (or a parse error)."""
    try:
        headers, _ = dkim.rfc822_parse(header_block(message))
    except dkim.MessageFormatError:
        return []
    return _signatures(headers)


def _signatures(headers: list) -> list[_Sig]:
    out = []
    values = [v for k, v in headers if k.lower() == b"dkim-signature"]
    for i, value in enumerate(values):
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList as e:
            out.append(_Sig(i, "", "", "", "", f"bad tag list: {e}"))
            continue

        def tag(name: bytes, t=tags) -> str:
            return t.get(name, b"").decode("ascii", "replace").strip()

        d, s = tag(b"d").lower().rstrip("."), tag(b"s")
        err = "" if d and s else "missing d= or s="
        out.append(_Sig(i, d, s, tag(b"i"), tag(b"a"), err))
    return out


async def verify_all(message: bytes, resolver: Resolver, *, max_signatures: int = MAX_SIGNATURES,
                     executor: Executor | None = None) -> list[DkimResult]:
    """Verify every signature; keys are fetched concurrently; the hashing and RSA work runs in
    `executor` (a process pool takes it off the event loop's CPU), else inline for a small
    message (INLINE_MAX_BYTES, INLINE_MAX_SIGNATURES), else in a thread."""
    inline = executor is None and len(message) <= INLINE_MAX_BYTES
    parsed: dkim.DKIM | None = None
    if inline:  # the message is parsed once, for the signature list and the verification
        try:
            parsed = _new_dkim(message)
        except dkim.MessageFormatError:
            return []
        sigs = _signatures(parsed.headers)
    else:
        sigs = parse_signatures(message)
    checked = [s for s in sigs[:max_signatures] if not s.error]
    names = sorted({s.key_name.lower() for s in checked})
    if len(names) == 1:  # the usual case: no tasks to create
        fetched = [await _fetch_key(resolver, names[0])]
    else:
        fetched = await asyncio.gather(*(_fetch_key(resolver, n) for n in names))
    keys = dict(zip(names, fetched, strict=True))
    verdicts: dict[int, tuple[str, str]] = {}
    to_verify = []
    for s in checked:
        key = keys[s.key_name.lower()]
        if isinstance(key, tuple):
            verdicts[s.index] = key
        else:
            to_verify.append(s.index)
    if to_verify:
        table = {n: k for n, k in keys.items() if isinstance(k, bytes)}
        if parsed is not None and len(to_verify) <= INLINE_MAX_SIGNATURES:
            verdicts.update(_verify_parsed(parsed, to_verify, table))
        elif executor is None:
            verdicts.update(await asyncio.to_thread(_verify_sync, message, to_verify, table))
        else:  # a process pool: an mmap (spooled message) cannot be pickled
            data = message if isinstance(message, bytes) else bytes(message)
            verdicts.update(await asyncio.get_running_loop().run_in_executor(
                executor, _verify_sync, data, to_verify, table))
    results = []
    for s in sigs:
        base = {"domain": s.domain, "selector": s.selector, "auid": s.auid,
                "algorithm": s.algorithm}
        if s.error:
            results.append(DkimResult("permerror", reason=s.error, **base))
        elif s.index >= max_signatures:
            results.append(DkimResult("policy", reason="too many signatures", **base))
        else:
            result, reason = verdicts[s.index]
            results.append(DkimResult(result, reason=reason, **base))
    return results


async def _fetch_key(resolver: Resolver, name: str) -> bytes | tuple[str, str]:
    try:
        ans = await resolver.txt(name)
    except DnsTempError as e:
        return ("temperror", f"key lookup: {e}")
    if not ans.records:
        return ("permerror", "no key for signature")
    for rec in ans.records:
        if b"p=" in rec:
            return rec
    return ans.records[0]


def _new_dkim(message: bytes) -> dkim.DKIM:
    return dkim.DKIM(message, logger=_log, minkey=MIN_KEY_BITS)


def _verify_sync(message: bytes, indices: list[int],
                 keys: dict[str, bytes]) -> dict[int, tuple[str, str]]:
    try:
        d = _new_dkim(message)
    except dkim.DKIMException as e:
        return {i: ("permerror", str(e)) for i in indices}
    return _verify_parsed(d, indices, keys)


def _verify_parsed(d: dkim.DKIM, indices: list[int],
                   keys: dict[str, bytes]) -> dict[int, tuple[str, str]]:
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").lower().rstrip("."))

    return {i: _verify_one(d, i, dnsfunc) for i in indices}


def _verify_one(d: dkim.DKIM, idx: int, dnsfunc) -> tuple[str, str]:
    try:
        ok = d.verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.ValidationError as e:
        text = str(e)
        if text.startswith(("body hash mismatch", "x= value is past", "t= value is in the future")):
            return ("fail", text)
        return ("permerror", text)
    except dkim.KeyFormatError as e:
        return ("policy" if "too small" in str(e) else "permerror", str(e))
    except dkim.DKIMException as e:
        return ("permerror", str(e) or e.__class__.__name__)
    except Exception as e:  # dkimpy can raise plain errors on hostile input
        return ("permerror", f"{e.__class__.__name__}: {e}")
    if ok:
        return ("pass", "")
    try:  # dkimpy says False for an unusable key too: tell that (permerror) from a bad signature
        name = d.selector + b"._domainkey." + d.domain + b"."
        dkim.evaluate_pk(name, dnsfunc(name))
    except Exception as e:
        return ("permerror", f"bad key: {e}")
    return ("fail", "signature did not verify")


def arc_sealers(message: bytes) -> list[tuple[str, str]]:
    """(d, s) of every ARC-Seal and ARC-Message-Signature header, in order."""
    try:
        headers, _ = dkim.rfc822_parse(header_block(message))
    except dkim.MessageFormatError:
        return []
    out = []
    for k, v in headers:
        if k.lower() in (b"arc-seal", b"arc-message-signature"):
            try:
                tags = parse_tag_value(v)
            except InvalidTagValueList:
                continue
            d = tags.get(b"d", b"").decode("ascii", "replace").strip().lower().rstrip(".")
            s = tags.get(b"s", b"").decode("ascii", "replace").strip()
            if d and s:
                out.append((d, s))
    return out


async def arc_trusted(message: bytes, resolver: Resolver, trusted: set[str]) -> bool:
    """True when the ARC chain validates (cv=pass) and every sealer's d= is in `trusted`."""
    return await arc_trusted_sealer(message, resolver, trusted) is not None


async def arc_trusted_sealer(message: bytes, resolver: Resolver, trusted: set[str],
                             ) -> str | None:
    """The newest sealer's d= when the ARC chain validates (cv=pass) and every sealer's d=
    is in `trusted`; else None."""
    pairs = arc_sealers(message)
    if not pairs or not trusted or any(d not in trusted for d, _ in pairs):
        return None
    names = sorted({f"{s}._domainkey.{d}".lower() for d, s in pairs})
    fetched = await asyncio.gather(*(_fetch_key(resolver, n) for n in names))
    keys = {n: k for n, k in zip(names, fetched, strict=True) if isinstance(k, bytes)}

    def run() -> bool:
        def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
            return keys.get(name.decode("ascii", "replace").lower().rstrip("."))

        try:
            cv, _, _ = dkim.arc_verify(message, logger=_log, dnsfunc=dnsfunc)
        except Exception:
            return False
        return cv == b"pass"

    return pairs[0][0] if await asyncio.to_thread(run) else None
