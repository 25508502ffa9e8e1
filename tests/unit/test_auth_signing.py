"""mailpolicy.auth.signing: keys, DKIM-Signature and ARC sets, checked with dkimpy's own verifiers
(keys published through a dict-backed dnsfunc built from dns_txt)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta, timezone

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value

from mailpolicy.auth import signing
from mailpolicy.auth.signing import SigningError, SigningKey

try:
    import nacl.signing  # noqa: F401 (dkimpy signs and verifies Ed25519 with PyNaCl)

    HAVE_NACL = True
except ImportError:
    HAVE_NACL = False
needs_nacl = pytest.mark.skipif(not HAVE_NACL, reason="PyNaCl not installed (Ed25519 in dkimpy)")

DOMAIN = "example.com"
BODY = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n" * 26
MESSAGE = (b"Return-Path: <alice@example.com>\r\n"
           b"Received: from client.example.net by mx.example.com;\r\n"
           b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
           b"From: Alice <alice@example.com>\r\n"
           b"To: Bob <bob@example.org>\r\n"
           b"Bcc: carol@example.org\r\n"
           b"Subject: quarterly figures\r\n"
           b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
           b"Message-ID: <1@example.com>\r\n"
           b"List-Id: <team.example.com>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n" + BODY)


class Dns:
    """dkimpy's dnsfunc(name, timeout=5) over published TXT values (chunks joined, as a
    resolver does)."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}

    def publish(self, key: SigningKey, txt: str) -> None:
        chunks = signing.txt_chunks(txt)
        assert all(len(c) <= 255 for c in chunks)
        name = f"{key.selector}._domainkey.{key.domain}.".encode()
        self.records[name] = "".join(chunks).encode()

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        return self.records.get(name)


@pytest.fixture(scope="module")
def rsa_pair() -> signing.KeyPair:
    return signing.generate_key("rsa")


@pytest.fixture(scope="module")
def ed_pair() -> signing.KeyPair:
    return signing.generate_key("ed25519")


@pytest.fixture
def dns() -> Dns:
    return Dns()


@pytest.fixture
def rsa_key(rsa_pair, dns) -> SigningKey:
    key = SigningKey(DOMAIN, "mp20240101r", "rsa", rsa_pair.private)
    dns.publish(key, signing.dns_txt(rsa_pair))
    return key


@pytest.fixture
def ed_key(ed_pair, dns) -> SigningKey:
    key = SigningKey(DOMAIN, "mp20240101e", "ed25519", ed_pair.private)
    dns.publish(key, signing.dns_txt(ed_pair))
    return key


def verify_all(message: bytes, dns: Dns) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature, top first (dkim.verify checks only the first)."""
    d = dkim.DKIM(message)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    out = []
    for i in range(count):
        try:
            out.append(bool(d.verify(idx=i, dnsfunc=dns)))
        except dkim.DKIMException:  # e.g. body hash mismatch is raised, not returned
            out.append(False)
    if count:
        assert out[0] == dkim.verify(message, dnsfunc=dns)  # the module function agrees
    return out


def h_tag(signature_block: bytes) -> list[bytes]:
    value = signature_block.split(b":", 1)[1]
    return [n.strip() for n in parse_tag_value(value)[b"h"].split(b":")]


# --- keys ---------------------------------------------------------------------------------------

def test_rsa_key_is_pkcs8_pem_with_lf_and_a_2048_bit_public_key(rsa_pair):
    assert rsa_pair.algorithm == "rsa"
    assert rsa_pair.private.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert b"\r" not in rsa_pair.private
    key = serialization.load_pem_private_key(rsa_pair.private, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    public = serialization.load_der_public_key(base64.b64decode(rsa_pair.public_b64))
    assert public.public_numbers() == key.public_key().public_numbers()
    assert "private" not in repr(rsa_pair) and "PRIVATE" not in repr(rsa_pair)


def test_ed25519_key_is_the_base64_seed_and_raw_public_key(ed_pair):
    seed = base64.b64decode(ed_pair.private, validate=True)
    assert len(seed) == 32 and len(base64.b64decode(ed_pair.public_b64)) == 32
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64encode(raw).decode() == ed_pair.public_b64
    assert signing.public_b64("ed25519", ed_pair.private) == ed_pair.public_b64


@needs_nacl
def test_ed25519_seed_is_what_pynacl_takes(ed_pair):
    import nacl.encoding
    import nacl.signing

    sk = nacl.signing.SigningKey(ed_pair.private, encoder=nacl.encoding.Base64Encoder)
    assert base64.b64encode(bytes(sk.verify_key)).decode() == ed_pair.public_b64


def test_public_key_from_a_stored_rsa_key(rsa_pair):
    assert signing.public_b64("rsa", rsa_pair.private) == rsa_pair.public_b64
    assert signing.public_b64("rsa", rsa_pair.private.replace(b"\n", b"\r\n")) == \
        rsa_pair.public_b64


def test_dns_txt_and_chunks(rsa_pair, ed_pair):
    txt = signing.dns_txt(rsa_pair)
    assert txt == f"v=DKIM1; k=rsa; p={rsa_pair.public_b64}"
    assert signing.dns_txt(ed_pair.public_b64, "ed25519") == \
        f"v=DKIM1; k=ed25519; p={ed_pair.public_b64}"
    assert signing.dns_txt("", "rsa") == "v=DKIM1; k=rsa; p="  # revoked
    chunks = signing.txt_chunks(txt)
    assert len(txt) > 255 and len(chunks) == 2
    assert len(chunks[0]) == 255 and "".join(chunks) == txt
    assert signing.txt_chunks("x" * 510) == ["x" * 255, "x" * 255]
    assert signing.txt_chunks("") == [""]
    with pytest.raises(SigningError):
        signing.dns_txt("abc", "dsa")  # type: ignore[arg-type]


def test_private_key_file_is_0600_under_umask_0(tmp_path, rsa_pair):
    path = tmp_path / "example.com.mp20240101r.key"
    old = os.umask(0)
    try:
        signing.write_private_key(path, rsa_pair.private)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        signing.write_private_key(path, rsa_pair.private)  # replaced atomically, still 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert signing.read_private_key(path) == rsa_pair.private
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_crlf_pem_file_is_read_as_lf_and_signs(tmp_path, rsa_pair, rsa_key, dns):
    path = tmp_path / "crlf.key"
    path.write_bytes(rsa_pair.private.replace(b"\n", b"\r\n"))
    with pytest.raises(dkim.KeyFormatError):  # the pitfall: dkimpy itself refuses CRLF PEM
        dkim.sign(MESSAGE, b"s", b"example.com", path.read_bytes())
    assert signing.read_private_key(path) == rsa_pair.private
    crlf_key = SigningKey(DOMAIN, rsa_key.selector, "rsa", path.read_bytes())  # not normalised
    assert verify_all(signing.dkim_sign(MESSAGE, [crlf_key]) + MESSAGE, dns) == [True]


def test_new_selector_is_a_dated_dns_label():
    now = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)
    assert signing.new_selector(now, "rsa") == "mp20261203r"
    assert signing.new_selector(now, "ed25519") == "mp20261203e"
    assert signing.new_selector(now, "rsa") == signing.new_selector(now, "rsa")
    east = now.astimezone(timezone(timedelta(hours=2)))  # already Dec 4 there: UTC decides
    assert signing.new_selector(east, "rsa") == "mp20261203r"
    SigningKey(DOMAIN, signing.new_selector(now, "rsa"), "rsa", b"")  # a valid selector


def test_signing_key_checks_its_names():
    with pytest.raises(SigningError):
        SigningKey("bücher.example", "s", "rsa", b"")
    with pytest.raises(SigningError):
        SigningKey(DOMAIN, "bad selector", "rsa", b"")
    with pytest.raises(SigningError):
        SigningKey(DOMAIN, "s", "dsa", b"")
    assert "PRIVATE" not in repr(SigningKey(DOMAIN, "s", "rsa", b"-----BEGIN PRIVATE KEY-----"))


# --- DKIM-Signature -----------------------------------------------------------------------------

def test_rsa_signature_verifies_and_signs_the_right_headers(rsa_key, dns):
    block = signing.dkim_sign(MESSAGE, [rsa_key])
    assert block.startswith(b"DKIM-Signature: ") and block.endswith(b"\r\n")
    assert block.count(b"DKIM-Signature:") == 1
    assert verify_all(block + MESSAGE, dns) == [True]
    tags = parse_tag_value(block.split(b":", 1)[1])
    assert tags[b"c"] == b"relaxed/relaxed" and tags[b"a"] == b"rsa-sha256"
    assert tags[b"d"] == b"example.com" and tags[b"s"] == b"mp20240101r"
    h = h_tag(block)
    for name in (b"return-path", b"received", b"bcc"):
        assert name not in h
    for name in (b"message-id", b"list-id", b"mime-version", b"content-type"):
        assert h.count(name) == 1
    for name in (b"from", b"subject", b"date", b"to"):  # present once, signed twice
        assert h.count(name) == 2
    for name in (b"cc", b"reply-to"):  # absent, signed once: cannot be added
        assert h.count(name) == 1


@needs_nacl
def test_ed25519_signature_verifies(ed_key, dns):
    block = signing.dkim_sign(MESSAGE, [ed_key])
    assert parse_tag_value(block.split(b":", 1)[1])[b"a"] == b"ed25519-sha256"
    assert verify_all(block + MESSAGE, dns) == [True]


@needs_nacl
def test_dual_signature_both_verify(rsa_key, ed_key, dns):
    block = signing.dkim_sign(MESSAGE, [rsa_key, ed_key])
    assert block.count(b"DKIM-Signature:") == 2
    signed = block + MESSAGE
    assert verify_all(signed, dns) == [True, True]
    tampered = signed.replace(b"quarterly figures", b"quarterly figures!")
    assert verify_all(tampered, dns) == [False, False]


def test_added_copies_of_signed_headers_break_the_signature(rsa_key, dns):
    signed = signing.dkim_sign(MESSAGE, [rsa_key]) + MESSAGE
    body_at = signed.index(b"\r\n\r\n") + 2
    for extra in (b"Subject: urgent: wire the money\r\n", b"Reply-To: mallory@example.net\r\n",
                  b"From: ceo@example.com\r\n", b"Cc: mallory@example.net\r\n"):
        assert verify_all(extra + signed, dns) == [False], extra
        assert verify_all(signed[:body_at] + extra + signed[body_at:], dns) == [False], extra
    # a trace header added on the way is not signed: still valid
    assert verify_all(b"Received: from mx.example.com by mx.example.org\r\n" + signed,
                      dns) == [True]


def test_body_change_breaks_the_signature(rsa_key, dns):
    signed = signing.dkim_sign(MESSAGE, [rsa_key]) + MESSAGE
    assert verify_all(signed + b"P.S. click here\r\n", dns) == [False]
    assert verify_all(signed.replace(b"Lorem", b"Lorum", 1), dns) == [False]


def test_relaxed_canonicalisation_survives_header_whitespace_changes(rsa_key, dns):
    signed = signing.dkim_sign(MESSAGE, [rsa_key]) + MESSAGE
    rewrapped = (signed.replace(b"Subject: quarterly figures\r\n",
                                b"Subject:   quarterly\r\n \t figures  \r\n")
                 .replace(b"To: Bob <bob@example.org>", b"TO:Bob   <bob@example.org>"))
    assert rewrapped != signed
    assert verify_all(rewrapped, dns) == [True]
    # and relaxed body: trailing whitespace and extra blank lines at the end
    assert verify_all(rewrapped.replace(b"eiusmod.\r\n", b"eiusmod.  \r\n") + b"\r\n\r\n",
                      dns) == [True]


def test_missing_or_double_from_is_refused(rsa_key):
    no_from = MESSAGE.replace(b"From: Alice <alice@example.com>\r\n", b"")
    with pytest.raises(SigningError, match="no From"):
        signing.dkim_sign(no_from, [rsa_key])
    with pytest.raises(SigningError, match="2 From"):
        signing.dkim_sign(b"From: a@example.com\r\n" + MESSAGE, [rsa_key])
    with pytest.raises(SigningError, match="no From"):
        signing.dkim_sign(b"", [rsa_key])


def test_non_ascii_or_malformed_headers_are_refused(rsa_key):
    with pytest.raises(SigningError, match="non-ASCII"):
        signing.dkim_sign(MESSAGE.replace(b"quarterly", "Quartalszahlen ü".encode()), [rsa_key])
    with pytest.raises(SigningError, match="malformed"):
        signing.dkim_sign(b"this is not a header\r\n" + MESSAGE, [rsa_key])
    with pytest.raises(SigningError, match="malformed"):
        signing.dkim_sign(b" folded first line\r\n" + MESSAGE, [rsa_key])
    # non-ASCII in the body is fine (8BITMIME)
    assert signing.dkim_sign(MESSAGE + "grüße\r\n".encode(), [rsa_key])


def test_a_bad_key_gives_no_partial_result(rsa_key):
    bad = SigningKey(DOMAIN, "broken", "rsa", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END")
    with pytest.raises(SigningError, match=r"broken\._domainkey\.example\.com"):
        signing.dkim_sign(MESSAGE, [rsa_key, bad])
    with pytest.raises(SigningError, match="no signing key"):
        signing.dkim_sign(MESSAGE, [])
    with pytest.raises(SigningError, match="32-byte"):
        signing.dkim_sign(MESSAGE, [SigningKey(DOMAIN, "e", "ed25519", b"c2hvcnQ=")])


def test_ed25519_without_pynacl_is_a_clear_error(ed_key, monkeypatch):
    monkeypatch.delattr(dkim, "nacl", raising=False)  # what dkimpy has when PyNaCl is missing
    with pytest.raises(SigningError, match="PyNaCl"):
        signing.dkim_sign(MESSAGE, [ed_key])


@needs_nacl
def test_ed25519_pkcs8_pem_is_accepted(ed_pair, ed_key, dns):
    seed = base64.b64decode(ed_pair.private)
    pem = ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    key = SigningKey(DOMAIN, ed_key.selector, "ed25519", pem.replace(b"\n", b"\r\n"))
    assert verify_all(signing.dkim_sign(MESSAGE, [key]) + MESSAGE, dns) == [True]


# --- the RSA adapter: dkimpy's signatures, made by cryptography ---------------------------------

def test_adapter_is_installed_in_dkim_only():
    assert dkim.RSASSA_PKCS1_v1_5_sign is signing.rsassa_pkcs1_v1_5_sign
    assert dkim.parse_pem_private_key is signing.parse_pem_private_key
    assert dkim.crypto.RSASSA_PKCS1_v1_5_sign is signing.DKIMPY_SIGN
    assert dkim.crypto.parse_pem_private_key is signing.DKIMPY_PARSE


@pytest.mark.parametrize("hash_name", ["sha256", "sha1"])
def test_adapter_signature_is_byte_identical_to_dkimpy(rsa_pair, hash_name):
    pk = signing.DKIMPY_PARSE(rsa_pair.private)  # a plain dict: the uncached path
    for data in (b"", b"x", BODY):
        h = getattr(hashlib, hash_name)
        assert signing.rsassa_pkcs1_v1_5_sign(h(data), pk) == signing.DKIMPY_SIGN(h(data), pk)
        cached = signing.parse_pem_private_key(rsa_pair.private)
        assert signing.rsassa_pkcs1_v1_5_sign(h(data), cached) == signing.DKIMPY_SIGN(h(data), pk)


def test_adapter_keeps_dkimpys_too_small_modulus_error():
    small = rsa.generate_private_key(65537, 1024).private_numbers()
    pk = {"modulus": small.public_numbers.n >> 600}  # 424 bits: 53 bytes < 51 + 11
    with pytest.raises(dkim.crypto.DigestTooLargeError):
        signing.rsassa_pkcs1_v1_5_sign(hashlib.sha256(b"x"), pk)


def test_whole_dkim_signature_matches_unmodified_dkimpy(rsa_key, monkeypatch):
    monkeypatch.setattr(dkim.time, "time", lambda: 1_700_000_000)  # same t=
    ours = signing.dkim_sign(MESSAGE, [rsa_key])
    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", signing.DKIMPY_SIGN)
    monkeypatch.setattr(dkim, "parse_pem_private_key", signing.DKIMPY_PARSE)
    assert signing.dkim_sign(MESSAGE, [rsa_key]) == ours


def test_signature_verifies_with_dkimpys_pure_python_verify(rsa_key, dns, monkeypatch):
    # mailpolicy.auth.dkim_rsa may have replaced dkimpy's verify in this process: use dkimpy's own
    from mailpolicy.auth import dkim_rsa

    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_verify", dkim_rsa.DKIMPY_VERIFY)
    assert verify_all(signing.dkim_sign(MESSAGE, [rsa_key]) + MESSAGE, dns) == [True]


# --- ARC ----------------------------------------------------------------------------------------

AR = "spf=pass smtp.mailfrom=alice@example.com; dkim=pass header.d=example.com"


@pytest.fixture
def fwd_key(rsa_pair, dns) -> SigningKey:
    key = SigningKey("forwarder.example", "arc1", "rsa", rsa_pair.private)
    dns.publish(key, signing.dns_txt(rsa_pair))
    return key


def test_first_arc_set_verifies(rsa_key, dns):
    assert signing.arc_verify(MESSAGE, dns)[0] == "none"
    arc = signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR, "none")
    lines = [line.split(b":", 1)[0] for line in arc.split(b"\r\n") if line and line[0] > 32]
    assert lines == [b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"]
    assert b"i=1; cv=none;" in arc
    aar = arc[arc.index(b"ARC-Authentication-Results:"):]
    assert b"i=1; mx.example.com;" in aar and b"spf=pass smtp.mailfrom=alice@example.com" in aar
    assert b"arc=none" in aar
    assert b"\r\nAuthentication-Results:" not in arc and not arc.startswith(b"Authentication")
    sealed = arc + MESSAGE
    cv, _results, reason = dkim.arc_verify(sealed, dnsfunc=dns)
    assert (cv, reason) == (dkim.CV_Pass, "success")
    assert signing.arc_verify(sealed, dns) == ("pass", "success")


def test_second_hop_seal_verifies_and_tampering_fails(rsa_key, fwd_key, dns):
    hop1 = signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR, "none") + MESSAGE
    cv, _ = signing.arc_verify(hop1, dns)
    assert cv == "pass"
    hop2 = signing.arc_seal(hop1, fwd_key, "mx.forwarder.example", "", cv) + hop1
    assert b"i=2; cv=pass;" in hop2
    assert dkim.arc_verify(hop2, dnsfunc=dns)[0] == dkim.CV_Pass
    assert signing.arc_verify(hop2, dns) == ("pass", "success")
    assert signing.arc_verify(hop2.replace(b"Lorem", b"Lorum", 1), dns)[0] == "fail"


def test_sealing_a_failed_chain_records_cv_fail(rsa_key, fwd_key, dns):
    hop1 = signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR, "none") + MESSAGE
    broken = hop1.replace(b"Lorem", b"Lorum", 1)
    cv, _ = signing.arc_verify(broken, dns)
    assert cv == "fail"
    hop2 = signing.arc_seal(broken, fwd_key, "mx.forwarder.example", "", cv) + broken
    assert b"i=2; cv=fail;" in hop2
    assert signing.arc_verify(hop2, dns)[0] == "fail"  # dkimpy: chain terminated (None)


def test_forged_authentication_results_are_not_sealed(rsa_key, dns):
    forged = (b"Authentication-Results: mx.example.com; dkim=pass header.d=paypal.com; arc=pass\r\n"
              + MESSAGE)
    arc = signing.arc_seal(forged, rsa_key, "mx.example.com", AR, "none")
    assert b"paypal" not in arc and b"arc=pass" not in arc
    assert signing.arc_verify(arc + forged, dns) == ("pass", "success")


def test_arc_seal_refuses_inconsistent_input(rsa_key, ed_key, dns):
    with pytest.raises(SigningError, match="must be 'none'"):
        signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR, "pass")
    hop1 = signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR, "none") + MESSAGE
    with pytest.raises(SigningError, match="'pass' or 'fail'"):
        signing.arc_seal(hop1, rsa_key, "mx.example.com", AR, "none")
    with pytest.raises(SigningError, match="RSA"):
        signing.arc_seal(MESSAGE, ed_key, "mx.example.com", AR, "none")
    with pytest.raises(SigningError, match="arc="):
        signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR + "; arc=pass", "none")
    with pytest.raises(SigningError, match="CR/LF"):
        signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", "spf=pass\r\nX-Evil: 1", "none")
    with pytest.raises(SigningError, match="authserv-id"):
        signing.arc_seal(MESSAGE, rsa_key, "mx example", AR, "none")
    with pytest.raises(SigningError, match="resinfo"):
        signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", "not a result", "none")
    with pytest.raises(SigningError, match="no From"):
        signing.arc_seal(MESSAGE.replace(b"From:", b"X-From:"), rsa_key, "mx.example.com", AR,
                         "none")


def test_arc_seal_with_no_results_and_chain_limit(rsa_key, dns):
    arc = signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", "none", "none")
    assert b"i=1; mx.example.com;\r\n arc=none" in arc
    fifty = b"".join(b"ARC-Seal: i=%d; cv=pass; a=rsa-sha256; d=x; s=y; b=AAAA\r\n" % i
                     for i in range(1, 51))
    with pytest.raises(SigningError, match="limit 50"):
        signing.arc_seal(fifty + MESSAGE, rsa_key, "mx.example.com", AR, "pass")


def test_arc_verify_maps_malformed_messages_to_fail(dns):
    assert signing.arc_verify(b" folded\r\n" + MESSAGE, dns)[0] == "fail"
    half = b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.com; s=x; b=AAAA\r\n" + MESSAGE
    assert signing.arc_verify(half, dns)[0] == "fail"


def test_arc_verify_lets_dns_errors_through(rsa_key):
    sealed = signing.arc_seal(MESSAGE, rsa_key, "mx.example.com", AR, "none") + MESSAGE

    class TempFail(Exception):
        pass

    def failing(name: bytes, timeout: int = 5) -> bytes:
        raise TempFail(name)

    with pytest.raises(TempFail):
        signing.arc_verify(sealed, failing)
