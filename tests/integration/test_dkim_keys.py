"""Per-domain DKIM keys: made as 0600 files with rows in the store, rotated to new selectors,
and used to sign (the signature verifies against the record dns-records prints)."""

from __future__ import annotations

import os
import stat
import time

import dkim
import pytest

from mailpolicy import config
from mailpolicy.auth import dkimkeys, signing
from mailpolicy.core.dkimkey import DkimKey, current
from mailpolicy.store import Store

MSG = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hi\r\n"
       b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nhello\r\n")


def test_current_picks_the_newest_active_key_per_algorithm() -> None:
    a = DkimKey("d", "a", "rsa", "p", "f", 0, 0, retire_at=200)
    b = DkimKey("d", "b", "rsa", "p", "f", 100, 100)
    e = DkimKey("d", "e", "ed25519", "p", "f", 0, 0)
    assert [k.selector for k in current([a, b, e], 50)] == ["a", "e"]
    assert [k.selector for k in current([a, b, e], 150)] == ["b", "e"]
    assert a.published(150) and not a.published(250)


@pytest.fixture
async def env(tmp_path):
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)},
                            "dkim": {"ed25519": True, "rotation_delay_hours": 1.0}})
    store = await Store.open(cfg.store_url)
    await store.create_domain("example.org")
    yield cfg, store
    await store.close()


def _dnsfunc(keys: list[DkimKey]):
    records = {f"{k.selector}._domainkey.{k.domain}.": signing.dns_txt(k.public_key, k.algorithm)
               for k in keys}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        found = records.get(name.decode())
        return found.encode() if found else None
    return lookup


async def test_keys_are_private_files_and_sign_verifiably(env) -> None:
    cfg, store = env
    made = await dkimkeys.make_keys(cfg, store, "example.org")
    assert [k.algorithm for k in made] == ["rsa", "ed25519"]
    for k in made:
        st = os.stat(k.key_file)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert k.key_file.startswith(str(cfg.state_dir / "dkim" / "example.org"))
    signed = await dkimkeys.sign(store, MSG)
    assert signed.count(b"DKIM-Signature:") == 2  # RSA + Ed25519, dual-signed
    d = dkim.DKIM(signed)
    for i in range(2):
        assert d.verify(idx=i, dnsfunc=_dnsfunc(made)), i
    assert await dkimkeys.sign(store, MSG.replace(b"example.org>", b"other.org>")) == (
        MSG.replace(b"example.org>", b"other.org>"))  # not our domain: unchanged


async def test_rotation_publishes_first_then_signs_then_retires(env) -> None:
    cfg, store = env
    old = await dkimkeys.make_keys(cfg, store, "example.org")
    new = await dkimkeys.rotate(cfg, store, "example.org")
    assert {k.selector for k in new}.isdisjoint({k.selector for k in old})
    keys = await store.dkim.list("example.org")
    now = time.time()
    assert [k.selector for k in current(keys, now)] == [k.selector for k in old]
    assert [k.selector for k in current(keys, now + 3601)] == [k.selector for k in new]
    assert all(k.published(now + 3601) for k in keys)  # the old ones drain for a while
    assert {k.selector for k in keys if k.published(now + 7201)} == {k.selector for k in new}


async def test_rotating_a_domain_without_keys_signs_at_once(env) -> None:
    cfg, store = env
    made = await dkimkeys.rotate(cfg, store, "example.org")
    assert [k.selector for k in current(await store.dkim.list("example.org"), time.time())] == [
        k.selector for k in made]
