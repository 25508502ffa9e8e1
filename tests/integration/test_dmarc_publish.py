"""The domain's own `_dmarc` record: its text, and RFC 2136 + TSIG publish/remove against a real
authoritative server (Knot DNS from Debian) started on loopback by the test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailpolicy import config
from mailpolicy.auth.dns import Resolver
from mailpolicy.auth.publish import PublishError, dmarc_record, sync_record
from mailpolicy.core.model import Domain

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_record_defaults_are_p_none_and_relaxed():
    assert dmarc_record(Domain(name="example.test", dmarc=True)) == "v=DMARC1; p=none"


def test_record_per_domain_fields():
    d = Domain(name="example.test", dmarc=True, dmarc_policy="reject",
               dmarc_rua="dmarc@example.test", dmarc_adkim="s", dmarc_aspf="s")
    assert dmarc_record(d) == ("v=DMARC1; p=reject; rua=mailto:dmarc@example.test; adkim=s; "
                               "aspf=s")


def test_record_config_defaults_fill_unset_fields():
    cfg = config.from_dict({"dmarc": {"default_policy": "quarantine",
                                      "default_rua": "mailto:r@ops.test"}})
    d = Domain(name="example.test", dmarc=True, dmarc_policy="")
    assert dmarc_record(d, cfg) == "v=DMARC1; p=quarantine; rua=mailto:r@ops.test"


def test_record_text_parses_as_what_receivers_see():
    from mailpolicy.auth.dmarc import parse_record

    r = parse_record(dmarc_record(Domain(name="e.test", dmarc_policy="reject", dmarc_adkim="s",
                                         dmarc_rua="a@e.test")))
    assert (r.p, r.adkim, r.rua, r.errors) == ("reject", "s", ("mailto:a@e.test",), ())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def knot_server(directory: Path, zone: str = "mail.test") -> Iterator[int]:
    """knotd on a free loopback port, authoritative for `zone`, taking TSIG-signed updates
    (key mp-key / SECRET); yields the port."""
    if not os.path.exists(KNOTD):
        pytest.skip("Knot DNS is not installed (apt-get install knot) — RFC 2136 test skipped")
    port = free_port()
    (directory / "db").mkdir()
    (directory / f"{zone}.zone").write_text(
        f"$ORIGIN {zone}.\n$TTL 300\n"
        f"@ SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n"
        "@ NS ns\nns A 127.0.0.1\n")
    conf = directory / "knot.conf"
    conf.write_text(f"""
server:
    rundir: "{directory}"
    listen: 127.0.0.1@{port}
database:
    storage: "{directory}/db"
log:
  - target: stderr
    any: warning
key:
  - id: mp-key
    algorithm: hmac-sha256
    secret: {SECRET}
acl:
  - id: mp-update
    key: mp-key
    action: update
template:
  - id: default
    storage: "{directory}"
    file: "%s.zone"
zone:
  - domain: {zone}
    acl: mp-update
""")
    proc = subprocess.Popen([KNOTD, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"knotd exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("knotd did not start listening within 10 s")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def knot(tmp_path):
    with knot_server(tmp_path) as port:
        yield port


def knot_cfg(port: int, secret: str = SECRET):
    return config.from_dict({"dmarc": {"update_server": f"127.0.0.1:{port}",
                                       "update_zone": "mail.test", "tsig_name": "mp-key",
                                       "tsig_secret": secret}})


async def txt_at(port: int, name: str) -> list[str]:
    for _ in range(50):  # knot applies an update before answering it; poll briefly anyway
        ans = await Resolver([f"127.0.0.1:{port}"], timeout=1.0, cache_size=0).txt(name)
        if ans.records or ans.status != "ok":
            return ans.texts()
        await asyncio.sleep(0.02)
    return []


async def test_dmarc_on_publishes_and_off_removes_the_record(knot):
    cfg = knot_cfg(knot)
    d = Domain(name="mail.test", dmarc=True, dmarc_policy="reject", dmarc_rua="dmarc@mail.test")
    assert await sync_record(cfg, d) is True
    assert await txt_at(knot, "_dmarc.mail.test") == [
        "v=DMARC1; p=reject; rua=mailto:dmarc@mail.test"]
    d2 = Domain(name="mail.test", dmarc=True, dmarc_policy="quarantine")
    await sync_record(cfg, d2)  # editing replaces, never adds a second record
    assert await txt_at(knot, "_dmarc.mail.test") == ["v=DMARC1; p=quarantine"]
    await sync_record(cfg, Domain(name="mail.test", dmarc=False))
    assert await txt_at(knot, "_dmarc.mail.test") == []


async def test_update_with_wrong_tsig_secret_is_refused(knot):
    bad = base64.b64encode(b"x" * 32).decode()
    with pytest.raises(PublishError):
        await sync_record(knot_cfg(knot, bad), Domain(name="mail.test", dmarc=True))
    assert await txt_at(knot, "_dmarc.mail.test") == []


async def test_no_update_server_configured_does_nothing():
    assert await sync_record(config.from_dict({}), Domain(name="x.test", dmarc=True)) is False


async def test_dkim_selectors_are_published_and_retired(knot):
    from mailpolicy.auth.publish import sync_dkim
    from mailpolicy.core.dkimkey import DkimKey

    cfg = knot_cfg(knot)
    now = time.time()
    live = DkimKey("mail.test", "mp20261203r", "rsa", "A" * 400, "/k", now, now)
    old = DkimKey("mail.test", "mp20250101r", "rsa", "QUJD", "/k", now, now, retire_at=now - 1)
    await sync_dkim(cfg, "mail.test", [live])
    await sync_dkim(cfg, "mail.test", [live, DkimKey("mail.test", "mp20250101r", "rsa", "QUJD",
                                                     "/k", now, now)])
    assert await txt_at(knot, "mp20261203r._domainkey.mail.test") == [
        "v=DKIM1; k=rsa; p=" + "A" * 400]  # split into 255-byte strings, joined back
    assert await txt_at(knot, "mp20250101r._domainkey.mail.test") == ["v=DKIM1; k=rsa; p=QUJD"]
    await sync_dkim(cfg, "mail.test", [live, old])
    assert await txt_at(knot, "mp20250101r._domainkey.mail.test") == []


async def test_retired_dkim_selectors_leave_dns(knot, tmp_path):
    """The admin server's upkeep round: a selector whose retire time passed is deleted from
    DNS, the live one stays."""
    from mailpolicy.admin.routes_sending import retire_due
    from mailpolicy.core.dkimkey import DkimKey
    from mailpolicy.store import Store

    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)},
                            "dmarc": {"update_server": f"127.0.0.1:{knot}",
                                      "update_zone": "mail.test", "tsig_name": "mp-key",
                                      "tsig_secret": SECRET}})
    store = await Store.open(cfg.store_url)
    try:
        await store.create_domain("mail.test")
        now = time.time()
        await store.dkim.add(DkimKey("mail.test", "old", "rsa", "QUJD", "/k", now, now))
        from mailpolicy.auth.publish import sync_dkim

        await sync_dkim(cfg, "mail.test", await store.dkim.list("mail.test"))
        assert await txt_at(knot, "old._domainkey.mail.test") == ["v=DKIM1; k=rsa; p=QUJD"]
        await store.dkim.add(DkimKey("mail.test", "new", "rsa", "REVG", "/k", now, now),
                             retire_others_at=now + 10)
        assert await retire_due(cfg, store, now, 3600) == []  # not yet
        assert await retire_due(cfg, store, now + 11, 3600) == ["mail.test"]
        assert await txt_at(knot, "old._domainkey.mail.test") == []
        assert await txt_at(knot, "new._domainkey.mail.test") == ["v=DKIM1; k=rsa; p=REVG"]
    finally:
        await store.close()
