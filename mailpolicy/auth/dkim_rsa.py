"""DKIM's RSA check in C: dkimpy's RSASSA-PKCS1-v1_5 verify, replaced by a call into `cryptography`.

Why: dkimpy verifies RSA signatures in pure Python (`dkim.crypto.int2str` byte by byte, then
`pow`); that is ~60% of a 2 KB message's DKIM verification and the largest single cost of the
filter's DMARC step (issue #7: DMARC on must keep >= 0.7x the messages/s of DMARC off).
`cryptography` (pyca, OpenSSL; already a dependency) does the same RFC 8017 §8.2.2 check in C.
Nothing cryptographic is implemented here: the adapter only converts dkimpy's inputs (a hash
object, the signature bytes, the key as {"modulus", "publicExponent"}) into cryptography's.

`install()` swaps the function in `dkim` and `dkim.crypto`, and remembers dkimpy's parse of a
key record (`dkim.evaluate_pk`: tag list, base64, ASN.1; ~40 µs, 12% of a 2 KB message's
verification) per (name, record), so a sender's key is parsed once; mailpolicy.auth.dkim calls
it once at import. Same answers as dkimpy's function (tests/unit/test_dkim_rsa.py), except
where dkimpy is laxer than RFC 8017: a signature representative >= n (RSAVP1 step 1) or a key
OpenSSL refuses (e.g. an even exponent or e=1) is False here. A modulus too small for the
digest still raises dkimpy's DigestTooLargeError, as before, so such keys stay a key error
(permerror), not a fail.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.crypto import DigestTooLargeError

__all__ = ["DIGEST_INFO_LEN", "DKIMPY_EVALUATE_PK", "DKIMPY_VERIFY", "HASHES", "evaluate_pk",
           "install", "rsassa_pkcs1_v1_5_verify"]

#: dkimpy's own functions, kept for the equivalence tests
DKIMPY_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
DKIMPY_EVALUATE_PK = dkim.evaluate_pk
KEY_RECORDS = 1024  # parsed key records remembered

HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}
# DER DigestInfo lengths (RFC 8017 §9.2 note 1): EMSA-PKCS1-v1_5 needs k >= len + 11
DIGEST_INFO_LEN = {"sha1": 35, "sha256": 51}


@functools.lru_cache(maxsize=256)
def _public_key(e: int, n: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(e, n).public_key()


def rsassa_pkcs1_v1_5_verify(hash, signature: bytes, public_key: dict) -> bool:
    """Drop-in for `dkim.crypto.RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)`."""
    name = hash.name.lower()
    algorithm = HASHES[name]  # KeyError for another hash, as dkimpy's HASH_ID_MAP lookup
    n, e = public_key["modulus"], public_key["publicExponent"]
    k = (n.bit_length() + 7) // 8
    if DIGEST_INFO_LEN[name] + 11 > k:
        raise DigestTooLargeError()
    try:
        s = int.from_bytes(signature, "big")  # OS2IP: leading zero octets do not matter
        if s >= n:
            return False
        _public_key(e, n).verify(s.to_bytes(k, "big"), hash.digest(), padding.PKCS1v15(),
                                 utils.Prehashed(algorithm))
    except InvalidSignature:
        return False
    except Exception:  # a key OpenSSL will not use, or anything else unexpected: not valid
        return False
    return True


@functools.lru_cache(maxsize=KEY_RECORDS)
def _evaluated(name: bytes | str, record: bytes | str) -> tuple[Any, ...]:
    return tuple(DKIMPY_EVALUATE_PK(name, record))


def evaluate_pk(name: bytes | str, s: Any) -> tuple[Any, ...]:
    """Drop-in for `dkim.evaluate_pk(name, s)`: the same answer (or exception: those are not
    remembered), from memory when the same record was parsed before. dkimpy only reads the
    key it returns (a dict of two ints, or a PyNaCl VerifyKey)."""
    if isinstance(s, bytes | str) and isinstance(name, bytes | str):
        return _evaluated(name, s)
    return tuple(DKIMPY_EVALUATE_PK(name, s))


def install() -> None:
    """Use the adapter for every dkimpy RSA verification (DKIM and ARC) and the remembered
    key-record parse. Idempotent."""
    dkim.crypto.RSASSA_PKCS1_v1_5_verify = rsassa_pkcs1_v1_5_verify
    dkim.RSASSA_PKCS1_v1_5_verify = rsassa_pkcs1_v1_5_verify
    dkim.evaluate_pk = evaluate_pk
