"""The RSA adapter (mailpolicy.auth.dkim_rsa) answers as dkimpy's own RSASSA-PKCS1-v1_5 verify:
valid, tampered, wrong key, short/long signature, sha1 and sha256."""

from __future__ import annotations

import hashlib

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import mailpolicy.auth.dkim  # noqa: F401 (installs the adapter)
from mailpolicy.auth import dkim_rsa

_ORIGINAL = dkim_rsa.DKIMPY_VERIFY  # dkimpy's pure-Python function

HASHES = {"sha1": (hashlib.sha1, hashes.SHA1()), "sha256": (hashlib.sha256, hashes.SHA256())}


@pytest.fixture(scope="module")
def keys():
    return [rsa.generate_private_key(65537, 1024), rsa.generate_private_key(65537, 2048)]


def pk(key) -> dict:
    n = key.public_key().public_numbers()
    return {"modulus": n.n, "publicExponent": n.e}


def sign(key, data: bytes, name: str) -> bytes:
    return key.sign(data, padding.PKCS1v15(), HASHES[name][1])


def both(name: str, data: bytes, sig: bytes, public: dict) -> tuple[bool, bool]:
    h = HASHES[name][0]
    return _ORIGINAL(h(data), sig, public), dkim_rsa.rsassa_pkcs1_v1_5_verify(h(data), sig,
                                                                             public)


def test_installed_for_dkim_and_arc():
    assert dkim.crypto.RSASSA_PKCS1_v1_5_verify is dkim_rsa.rsassa_pkcs1_v1_5_verify
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkim_rsa.rsassa_pkcs1_v1_5_verify
    assert _ORIGINAL is not dkim_rsa.rsassa_pkcs1_v1_5_verify


@pytest.mark.parametrize("name", ["sha1", "sha256"])
def test_same_answers_as_dkimpy(keys, name):
    small, big = keys
    data = b"signed header block"
    for key, other in ((small, big), (big, small)):
        sig = sign(key, data, name)
        cases = {
            "valid": (data, sig, pk(key), True),
            "tampered data": (data + b"!", sig, pk(key), False),
            "tampered signature": (data, sig[:-1] + bytes([sig[-1] ^ 1]), pk(key), False),
            "wrong key": (data, sig, pk(other), False),
            "leading zero octet added": (data, b"\0" + sig, pk(key), True),
            # a signature starting with a zero octet stays valid without it (1 in 256)
            "truncated": (data, sig[1:], pk(key), sig[0] == 0),
            "too long": (data, sig + b"\0", pk(key), False),
            "empty": (data, b"", pk(key), False),
            "all ones": (data, b"\xff" * len(sig), pk(key), False),
        }
        for case, (d, s, p, expected) in cases.items():
            assert both(name, d, s, p) == (expected, expected), (name, case)


@pytest.mark.parametrize("name", ["sha1", "sha256"])
def test_short_signature_with_leading_zero_stripped(keys, name):
    key = keys[0]  # about 1 in 256 signatures starts with a zero octet: find one
    for i in range(5000):
        data = b"message %d" % i
        sig = sign(key, data, name)
        if sig[0] == 0:
            break
    else:
        pytest.skip("no signature with a leading zero octet")
    assert both(name, data, sig[1:], pk(key)) == (True, True)


def test_modulus_too_small_for_the_digest_raises_like_dkimpy():
    tiny = {"modulus": (1 << 399) | 1, "publicExponent": 65537}  # 50 octets < 51 + 11 (sha256)
    for f in (_ORIGINAL, dkim_rsa.rsassa_pkcs1_v1_5_verify):
        with pytest.raises(dkim.crypto.DigestTooLargeError):
            f(hashlib.sha256(b"x"), b"\1" * 50, tiny)


def test_stricter_than_dkimpy_where_rfc8017_says_invalid(keys):
    key = keys[0]
    data = b"signed header block"
    sig = sign(key, data, "sha256")
    n = pk(key)["modulus"]
    k = (n.bit_length() + 7) // 8
    # s + n is the same residue: dkimpy reduces it and accepts, RFC 8017 RSAVP1 rejects s >= n
    over = (int.from_bytes(sig, "big") + n).to_bytes(k + 1, "big")
    assert both("sha256", data, over, pk(key)) == (True, False)


def test_never_raises_on_a_bad_key():
    h = hashlib.sha256(b"x")
    assert dkim_rsa.rsassa_pkcs1_v1_5_verify(h, b"\1" * 128,
                                             {"modulus": (1 << 1024) - 2,  # even
                                              "publicExponent": 65537}) is False
    assert dkim_rsa.rsassa_pkcs1_v1_5_verify(h, b"\1" * 128,
                                             {"modulus": (1 << 1024) - 1,
                                              "publicExponent": 2}) is False


def test_key_records_parsed_once_with_dkimpys_answers(keys):
    import base64

    from cryptography.hazmat.primitives import serialization

    assert dkim.evaluate_pk is dkim_rsa.evaluate_pk
    der = keys[0].public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    name = b"s1._domainkey.example.test."
    first = dkim.evaluate_pk(name, record)
    assert first == tuple(dkim_rsa.DKIMPY_EVALUATE_PK(name, record))
    assert dkim.evaluate_pk(name, record) is first  # remembered
    assert first[0]["modulus"] == keys[0].public_key().public_numbers().n
    for bad in (b"v=DKIM1; k=rsa; p=", b"v=DKIM1; k=rsa; p=AAAA", b"", b"k=nope; p=AAAA"):
        with pytest.raises(dkim.KeyFormatError):  # errors raised as dkimpy raises them, each time
            dkim.evaluate_pk(name, bad)
        with pytest.raises(dkim.KeyFormatError):
            dkim.evaluate_pk(name, bad)
