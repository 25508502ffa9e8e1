"""Outgoing signatures: DKIM keys (make, store, publish), DKIM-Signature and ARC sets."""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.crypto import DigestTooLargeError

from mailpolicy.auth.dkim_rsa import DIGEST_INFO_LEN, HASHES

__all__ = [
    "DKIMPY_PARSE",
    "DKIMPY_SIGN",
    "OVERSIGN",
    "SIGN",
    "Algorithm",
    "ChainValidation",
    "KeyPair",
    "SigningError",
    "SigningKey",
    "arc_seal",
    "arc_verify",
    "dkim_sign",
    "dns_txt",
    "generate_key",
    "install",
    "new_selector",
    "public_b64",
    "read_private_key",
    "rsassa_pkcs1_v1_5_sign",
    "sign_headers",
    "txt_chunks",
    "write_private_key",
]

Algorithm = Literal["rsa", "ed25519"]
ChainValidation = Literal["pass", "fail", "none"]

RSA_BITS = 2048
KEY_CACHE_SIZE = 1024  # parsed keys kept; a miss costs ~30 ms (OpenSSL checks the RSA key once)
ARC_MAX_INSTANCE = 50  # RFC 8617 §4.2.1

#: Header fields signed when present (RFC 6376 §5.4.1, plus Sender, Message-ID and the MIME ones);
#: every List-* and Resent-* field except Resent-Bcc is signed too (sign_headers).
SIGN = frozenset({
    "from", "sender", "reply-to", "subject", "date", "to", "cc", "in-reply-to", "references",
    "message-id", "mime-version", "content-type", "content-transfer-encoding",
})
#: Signed once more than present, so that a copy cannot be added (or, if absent, added at all)
#: without breaking the signature.
OVERSIGN = ("from", "reply-to", "subject", "date", "to", "cc")
_NEVER = frozenset({"resent-bcc"})  # Return-Path, Received, Bcc, … are simply not in SIGN

_SIGNATURE_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")
_CRLF = b"\r\n"
_ARC_RESULT = re.compile(r"(?:^|;)\s*arc\s*(?:/\s*\d+\s*)?=", re.IGNORECASE)

_log = logging.getLogger("mailpolicy.auth.signing")
_log.addHandler(logging.NullHandler())
_log.propagate = False  # dkimpy logs every failed ARC verification at error level


class SigningError(ValueError):
    """The message or key cannot be signed/sealed; the message says why. Nothing was produced."""


# ---------------------------------------------------------------------------------------------
# Key material


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A new key: `private` in the form dkimpy signs with, `public_b64` for the DNS p= tag."""

    algorithm: Algorithm
    private: bytes = field(repr=False)  # RSA: PKCS#8 PEM (LF); Ed25519: base64 of the 32-byte seed
    public_b64: str


def generate_key(algorithm: Algorithm) -> KeyPair:
    """A fresh RSA 2048 or Ed25519 key pair."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return KeyPair("rsa", pem.replace(_CRLF, b"\n"), _rsa_public_b64(key))
    if algorithm == "ed25519":
        edkey = ed25519.Ed25519PrivateKey.generate()
        seed = edkey.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
        return KeyPair("ed25519", base64.b64encode(seed), _ed25519_public_b64(edkey))
    raise SigningError(f"unknown key algorithm {algorithm!r} (rsa or ed25519)")


def public_b64(algorithm: Algorithm, private: bytes) -> str:
    """The DNS p= value for a stored private key (as generate_key or read_private_key give it)."""
    if algorithm == "rsa":
        try:
            key = serialization.load_pem_private_key(_pem_lf(private), password=None)
        except (ValueError, TypeError) as e:
            raise SigningError(f"unreadable RSA private key: {e}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningError("not an RSA private key")
        return _rsa_public_b64(key)
    if algorithm == "ed25519":
        seed = base64.b64decode(_ed25519_seed_b64(private))
        return _ed25519_public_b64(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    raise SigningError(f"unknown key algorithm {algorithm!r} (rsa or ed25519)")


def dns_txt(key: KeyPair | str, algorithm: Algorithm | None = None) -> str:
    """The `<selector>._domainkey.<domain>` TXT value; an empty public key is a revoked one."""
    if isinstance(key, KeyPair):
        algorithm, public = algorithm or key.algorithm, key.public_b64
    else:
        public = key
    if algorithm not in _SIGNATURE_ALGORITHM:
        raise SigningError(f"unknown key algorithm {algorithm!r} (rsa or ed25519)")
    return f"v=DKIM1; k={algorithm}; p={public}"


def txt_chunks(value: str) -> list[str]:
    """The character-strings of one TXT record: at most 255 each, joined back by the resolver."""
    return [value[i:i + 255] for i in range(0, len(value), 255)] or [""]


def write_private_key(path: str | os.PathLike[str], private: bytes) -> None:
    """Write a key file atomically, mode 0600 whatever the umask; an existing file is replaced."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits; be exact anyway
            view = memoryview(private)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)


def read_private_key(path: str | os.PathLike[str]) -> bytes:
    """A key file's contents; PEM CRLF line ends (which dkimpy refuses) become LF."""
    with open(path, "rb") as f:
        data = f.read()
    return _pem_lf(data) if b"-----BEGIN" in data else data.strip()


def new_selector(now: datetime, algorithm: Algorithm) -> str:
    """A selector for a key made at `now` (UTC; naive means UTC): `mp20261203r` / `mp20261203e`."""
    if algorithm not in _SIGNATURE_ALGORITHM:
        raise SigningError(f"unknown key algorithm {algorithm!r} (rsa or ed25519)")
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return f"mp{now:%Y%m%d}{algorithm[0]}"


def _rsa_public_b64(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _ed25519_public_b64(key: ed25519.Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def _pem_lf(private: bytes) -> bytes:
    """PEM as dkimpy's parser wants it: LF line ends (its regex is `--\\n(.*?)\\n--`)."""
    return private.replace(_CRLF, b"\n").strip() + b"\n"


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _ed25519_seed_b64(private: bytes) -> bytes:
    """The base64 32-byte seed dkimpy (PyNaCl) takes; a PKCS#8 PEM Ed25519 key is converted."""
    if b"-----BEGIN" in private:
        try:
            key = serialization.load_pem_private_key(_pem_lf(private), password=None)
        except (ValueError, TypeError) as e:
            raise SigningError(f"unreadable Ed25519 private key: {e}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SigningError("not an Ed25519 private key")
        return base64.b64encode(key.private_bytes(serialization.Encoding.Raw,
                                                  serialization.PrivateFormat.Raw,
                                                  serialization.NoEncryption()))
    text = b"".join(private.split())
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise SigningError("Ed25519 private key must be the base64 of a 32-byte seed")
    return text


# ---------------------------------------------------------------------------------------------
# RSA signing in C: dkimpy's RSASSA-PKCS1-v1_5 sign, replaced by a call into `cryptography`.
# Nothing cryptographic is implemented here: keys come from `cryptography`, DKIM/ARC headers from
# dkimpy. But dkimpy signs RSA in pure Python (~6.6 ms per RSA 2048 signature, no blinding) and
# re-parses the PEM key on every call (~130 µs); so, as mailpolicy.auth.dkim_rsa does for
# verification, install() (run at import) swaps dkim.RSASSA_PKCS1_v1_5_sign for a call into
# `cryptography` (~0.25 ms) and dkim.parse_pem_private_key for a cached version. RSASSA-PKCS1-v1_5
# is deterministic: the signatures are byte for byte dkimpy's (tests/unit/test_auth_signing.py).

#: dkimpy's own functions, kept for the equivalence tests
DKIMPY_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign
DKIMPY_PARSE = dkim.crypto.parse_pem_private_key



class _Digest(Protocol):
    """What dkimpy hands the RSA function: a hashlib object (or its HashThrough wrapper)."""

    name: str

    def digest(self) -> bytes: ...


class _RsaKey(dict):
    """dkimpy's private key mapping, plus the OpenSSL key built from the same numbers."""

    __slots__ = ("openssl",)
    openssl: rsa.RSAPrivateKey | None


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _openssl_key(n: int, e: int, d: int, p: int, q: int, dp: int, dq: int,
                 qinv: int) -> rsa.RSAPrivateKey | None:
    try:  # OpenSSL checks the key here (~30 ms for 2048 bits): once per key, then cached
        numbers = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qinv, rsa.RSAPublicNumbers(e, n))
        return numbers.private_key()
    except ValueError:
        return None


def _openssl_key_of(pk: dict) -> rsa.RSAPrivateKey | None:
    return _openssl_key(pk["modulus"], pk["publicExponent"], pk["privateExponent"], pk["prime1"],
                        pk["prime2"], pk["exponent1"], pk["exponent2"], pk["coefficient"])


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _parse_pem_cached(data: bytes) -> _RsaKey:
    key = _RsaKey(DKIMPY_PARSE(data))  # dkimpy's parser: the same keys accepted, the same errors
    key.openssl = _openssl_key_of(key)
    return key


def parse_pem_private_key(data: bytes) -> dict:
    """Drop-in for `dkim.crypto.parse_pem_private_key`, cached per PEM text."""
    if isinstance(data, bytes):
        return _parse_pem_cached(data)
    return DKIMPY_PARSE(data)


def rsassa_pkcs1_v1_5_sign(hash: _Digest, private_key: dict) -> bytes:
    """Drop-in for `dkim.crypto.RSASSA_PKCS1_v1_5_sign(hash, private_key)` (RFC 8017 §8.2.1)."""
    name = hash.name.lower()
    algorithm = HASHES[name]  # KeyError for another hash, as dkimpy's HASH_ID_MAP lookup
    k = (private_key["modulus"].bit_length() + 7) // 8
    if DIGEST_INFO_LEN[name] + 11 > k:
        raise DigestTooLargeError()
    key = getattr(private_key, "openssl", None) or _openssl_key_of(private_key)
    if key is None:
        raise dkim.KeyFormatError("RSA private key refused by OpenSSL (inconsistent numbers)")
    return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


def install() -> None:
    """Use the adapter for every dkimpy RSA signature (DKIM and ARC). Idempotent.

    Only the names in the `dkim` package are replaced (what DKIM.sign and ARC.sign call);
    `dkim.crypto` keeps dkimpy's functions."""
    dkim.RSASSA_PKCS1_v1_5_sign = rsassa_pkcs1_v1_5_sign
    dkim.parse_pem_private_key = parse_pem_private_key


install()


# ---------------------------------------------------------------------------------------------
# DKIM-Signature


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One DKIM key as used to sign: d=, s=, the algorithm and the private key (any form above)."""

    domain: str
    selector: str
    algorithm: str
    private: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.algorithm not in _SIGNATURE_ALGORITHM:
            raise SigningError(f"unknown key algorithm {self.algorithm!r} (rsa or ed25519)")
        if not _DNS_NAME.match(self.domain.rstrip(".")):
            raise SigningError(f"signing domain {self.domain!r} is not an ASCII DNS name")
        if not _DNS_NAME.match(self.selector):
            raise SigningError(f"selector {self.selector!r} is not an ASCII DNS name")

    def dkimpy_private(self) -> bytes:
        """The key in the form dkimpy takes for this algorithm."""
        if self.algorithm == "rsa":
            return _pem_lf(self.private)
        return _ed25519_seed_b64(self.private)


def sign_headers(headers: Iterable[Sequence[bytes]]) -> list[bytes]:
    """The h= list for these header fields: each signable one as often as present, in order of
    first appearance, then every OVERSIGN name once more (present or not)."""
    counts: dict[str, int] = {}
    for name, _value in headers:
        lname = name.decode("ascii").lower()
        if lname in SIGN or (lname.startswith(("list-", "resent-")) and lname not in _NEVER):
            counts[lname] = counts.get(lname, 0) + 1
    out = [n for n, c in counts.items() for _ in range(c)] + list(OVERSIGN)
    return [n.encode("ascii") for n in out]


def _parse(message: bytes, what: str) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's parse of the message (header fields, body); SigningError if it cannot."""
    try:
        return dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError) as e:  # IndexError: a folded first line
        raise SigningError(f"cannot {what}: malformed header section "
                           f"({e or 'continuation line first'})") from None


def _check(headers: Sequence[Sequence[bytes]], what: str) -> None:
    """ASCII header fields only, and exactly one From (DMARC's and DKIM's anchor)."""
    for name, value in headers:
        if not value.isascii():
            raise SigningError(f"cannot {what}: non-ASCII bytes in the {name.decode()} header")
    froms = sum(1 for name, _ in headers if name.lower() == b"from")
    if froms != 1:
        raise SigningError(f"cannot {what}: the message has {froms or 'no'} From header"
                           f"{'s' if froms > 1 else ''}; exactly one is required")


def dkim_sign(message: bytes, keys: Sequence[SigningKey]) -> bytes:
    """The DKIM-Signature header(s) to prepend: one per key, in order (RSA + Ed25519 = dual).

    relaxed/relaxed, h= from sign_headers(). Raises SigningError, never returns a partial block."""
    if not keys:
        raise SigningError("no signing key")
    try:  # dkimpy parses the message once; it is then signed once per key
        signer = dkim.DKIM(message, logger=_log, linesep=_CRLF)
    except (dkim.MessageFormatError, IndexError) as e:  # IndexError: a folded first line
        raise SigningError("cannot DKIM-sign: malformed header section "
                           f"({e or 'continuation line first'})") from None
    _check(signer.headers, "DKIM-sign")
    include = sign_headers(signer.headers)
    out = []
    for key in keys:
        try:
            out.append(signer.sign(key.selector.encode("ascii"),
                                   key.domain.rstrip(".").encode("ascii"), key.dkimpy_private(),
                                   signature_algorithm=_SIGNATURE_ALGORITHM[key.algorithm],
                                   canonicalize=(b"relaxed", b"relaxed"), include_headers=include))
        except dkim.NaClNotFoundError:
            raise SigningError("Ed25519 signing needs PyNaCl (pip install pynacl)") from None
        except (dkim.DKIMException, ValueError, TypeError) as e:
            raise SigningError(f"DKIM signing with {key.selector}._domainkey.{key.domain} "
                               f"({key.algorithm}) failed: {e}") from None
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# ARC (RFC 8617)


def _authserv_id(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().split(None, 1)[0].lower() if value.strip() else b""


def arc_seal(message: bytes, key: SigningKey, srv_id: str, auth_results: str,
             chain_validation: ChainValidation) -> bytes:
    """The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) to prepend.

    `auth_results` is the resinfo list of our Authentication-Results without the authserv-id
    (`spf=pass smtp.mailfrom=…; dkim=pass header.d=…`, or "" / "none"); `chain_validation` is
    arc_verify's verdict on the message as received ("none" when it has no ARC set). dkimpy takes
    cv= and the AAR from an `Authentication-Results: <srv_id>; …; arc=<cv>` header and silently
    seals nothing without one: it is added to the copy handed to dkimpy (after removing any
    Authentication-Results already claiming srv_id), not to the result. RSA keys only."""
    if key.algorithm != "rsa":
        raise SigningError("ARC sets are RSA-signed only (dkimpy and RFC 8617 practice)")
    if chain_validation not in ("pass", "fail", "none"):
        raise SigningError(f"chain_validation {chain_validation!r} is not pass, fail or none")
    if not srv_id or not srv_id.isascii() or re.search(r"[\s;()\"]", srv_id):
        raise SigningError(f"authserv-id {srv_id!r} must be one ASCII token (a host name)")
    resinfo = auth_results.strip().strip(";").strip()
    if not resinfo.isascii() or re.search(r"[\x00-\x1f\x7f]", resinfo):
        raise SigningError("auth_results must be ASCII without control characters (no CR/LF)")
    if _ARC_RESULT.search(resinfo):
        raise SigningError("auth_results must not carry an arc= result (pass chain_validation)")
    if resinfo.lower() == "none":
        resinfo = ""
    ar = f"{srv_id}; {resinfo}; arc={chain_validation}" if resinfo else \
        f"{srv_id}; arc={chain_validation}"

    headers, body = _parse(message, "ARC-seal")
    _check(headers, "ARC-seal")
    own = srv_id.lower().encode("ascii")
    kept = [(n, v) for n, v in headers
            if not (n.lower() == b"authentication-results" and _authserv_id(v) == own)]
    copy = b"".join([b"Authentication-Results: " + ar.encode("ascii") + _CRLF,
                     *(n + b":" + v for n, v in kept), _CRLF, body])

    sealer = dkim.ARC(copy, logger=_log, signature_algorithm=b"rsa-sha256", linesep=_CRLF)
    instance, _ = sealer.sorted_arc_headers()  # the chain as dkimpy's verifier sees it
    if instance == 0 and chain_validation != "none":
        raise SigningError("the message has no ARC set: chain_validation must be 'none' (i=1)")
    if instance > 0 and chain_validation == "none":
        raise SigningError(f"the message has ARC sets up to i={instance}: chain_validation "
                           "must be 'pass' or 'fail'")
    if instance >= ARC_MAX_INSTANCE:
        raise SigningError(f"the ARC chain already has {instance} sets (RFC 8617 limit 50)")
    try:
        arc_set = sealer.sign(key.selector.encode("ascii"), key.domain.rstrip(".").encode("ascii"),
                              key.dkimpy_private(), srv_id.encode("ascii"),
                              include_headers=sign_headers(kept))
    except (dkim.DKIMException, ValueError, TypeError) as e:
        raise SigningError(f"ARC sealing with {key.selector}._domainkey.{key.domain} "
                           f"failed: {e}") from None
    if len(arc_set) != 3:  # dkimpy found no Authentication-Results for srv_id: authres refused it
        raise SigningError(f"no ARC set: dkimpy could not parse 'Authentication-Results: {ar}' "
                           "(auth_results is not an RFC 8601 resinfo list)")
    return b"".join(arc_set)


def arc_verify(message: bytes, dnsfunc: Callable[..., bytes | str | None],
               minkey: int = 1024) -> tuple[ChainValidation, str]:
    """The ARC chain verdict (cv for our seal) and dkimpy's reason.

    `dnsfunc(name: bytes, timeout=5)` returns the TXT text of `<s>._domainkey.<d>.` (None if
    none); it runs synchronously. Exceptions it raises other than dkim.DnsTimeoutError propagate,
    so a temporary DNS failure is not mistaken for a broken chain. A chain in which an earlier
    hop already said cv=fail (dkimpy's None) is "fail"."""
    try:
        verifier = dkim.ARC(message, logger=_log, minkey=minkey)
        cv, _results, reason = verifier.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        return "fail", str(e)
    except IndexError:  # dkimpy's parser on a folded first line
        return "fail", "malformed header section"
    if cv == dkim.CV_Pass:
        return "pass", reason
    if cv == dkim.CV_None:
        return "none", reason
    return "fail", reason
