"""The SQL store on SQLite and on a real PostgreSQL (one conformance suite for both):
validation, atomicity, audit, race-safe claims."""

import asyncio
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailpolicy.core.directory import Kind, resolve
from mailpolicy.core.model import Attachment
from mailpolicy.store import Conflict, Invalid, NotFound, Store
from mailpolicy.store.passwords import verify_password

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def pg_server():
    """A private PostgreSQL on loopback (the store's scale-out backend), when installed."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="mp-pg-"))  # readable by the postgres user
    os.chmod(base, 0o777)
    data = base / "data"
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "mp"],
                   check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([*user, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                             "-k", str(base), "-h", "127.0.0.1", "-F"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                         capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not start"
        time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(base, ignore_errors=True)


def createdb(port: int) -> str:
    db = f"t{uuid.uuid4().hex[:12]}"
    subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mp", db],
                   check=True, timeout=60)
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    else:
        port = request.getfixturevalue("pg_server")
        db = await asyncio.to_thread(createdb, port)
        url = f"postgresql+asyncpg://mp@127.0.0.1:{port}/{db}"
    s = await Store.open(url, ip_pool=("192.0.2.1", "192.0.2.2"))
    await s.create_domain("example.test", owner="bob")
    yield s
    await s.close()


async def snapshot(s):
    return (await s.list_domains(), await s.list_mailboxes(), len(await s.list_audit(1000)))


async def test_mailbox_round_trip_and_password_hash(store):
    await store.create_mailbox("bob@example.test")  # a local copy target must exist
    mb = await store.create_mailbox("Alice@Example.test", password="s3cret-1", aliases="al ally",
                                    max_size="500M", copies_to=["bob", "x@ext.test"])
    assert mb.address == "alice@example.test"
    assert mb.aliases == ("al", "ally") and mb.max_size == 500 * 1024**2
    assert mb.copies_to == ("bob@example.test", "x@ext.test")
    assert mb.password_hash.startswith("{ARGON2ID}$argon2id$")
    assert verify_password("s3cret-1", mb.password_hash)
    assert not verify_password("x", mb.password_hash)
    r = await resolve(store, "ally+tag@EXAMPLE.test")
    assert r.kind is Kind.MAILBOX and r.mailbox.id == mb.id and r.via_alias


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"address": "bad..name@example.test"}, "name"),
    ({"address": "../etc@example.test"}, "name"),
    ({"address": "nul\x00@example.test"}, "name"),
    ({"address": "x" * 65 + "@example.test"}, "name"),
    ({"address": "x@nodomain.test"}, "domain"),
    ({"address": "y@example.test", "aliases": ["alice"]}, "aliases"),
    ({"address": "y@example.test", "aliases": ["bad name"]}, "aliases"),
    ({"address": "y@example.test", "aliases": ["y"]}, "aliases"),
    ({"address": "y@example.test", "no_save": True}, "no_save"),
    ({"address": "y@example.test", "max_size": "lots"}, "max_size"),
    ({"address": "y@example.test", "copies_to": ["y@example.test"]}, "copies_to"),
    ({"address": "y@example.test", "password": "a\nb"}, "password"),
])
async def test_bad_mailbox_input_names_the_field_and_changes_nothing(store, kwargs, field):
    await store.create_mailbox("alice@example.test")
    before = await snapshot(store)
    with pytest.raises((Invalid, Conflict)) as e:
        await store.create_mailbox(**kwargs)
    assert e.value.field == field
    assert await snapshot(store) == before


async def test_alias_unique_among_mailboxes_and_aliases(store):
    await store.create_mailbox("alice@example.test", aliases=["info"])
    with pytest.raises(Conflict):
        await store.create_mailbox("info@example.test")
    with pytest.raises(Conflict):
        await store.create_mailbox("bob@example.test", aliases=["info"])


async def test_name_and_domain_cannot_change(store):
    await store.create_mailbox("alice@example.test")
    for f in ("name", "domain"):
        with pytest.raises(Invalid) as e:
            await store.update_mailbox("alice@example.test", **{f: "x"})
        assert e.value.field == f


async def test_update_keeps_unmentioned_fields(store):
    await store.create_mailbox("alice@example.test", aliases=["al"], copies_to=["x@ext.test"],
                               password="pw-long-enough")
    mb = await store.update_mailbox("alice@example.test", no_save=True, max_size="1G")
    assert mb.aliases == ("al",) and mb.no_save and mb.max_size == 1024**3
    assert verify_password("pw-long-enough", mb.password_hash)
    with pytest.raises(Invalid):
        await store.update_mailbox("alice@example.test", copies_to=[])


async def test_outbound_ip_auto_picks_the_least_used(store):
    d2 = await store.create_domain("b.test", outbound_ip="auto")
    d3 = await store.create_domain("c.test")
    assert {d2.outbound_ip} | {(await store.get_domain("example.test")).outbound_ip} == {
        "192.0.2.1", "192.0.2.2"}
    assert d3.outbound_ip in ("192.0.2.1", "192.0.2.2")
    with pytest.raises(Invalid) as e:
        await store.create_domain("d.test", outbound_ip="203.0.113.9")
    assert e.value.field == "outbound_ip"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"default_action": "bounce"}, "default_action"),
    ({"default_action": "redirect"}, "redirect_to"),
    ({"default_action": "redirect", "redirect_to": "not an address"}, "redirect_to"),
    ({"default_action": "redirect-domain", "redirect_to": "new.test"}, "redirect_to"),
    ({"default_action": "reject", "redirect_to": "x@y.test"}, "redirect_to"),
    ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}, "tls_cert"),
    ({"tls_cert": "/nonexistent.pem"}, "tls_key"),
    ({"owner": "bad owner\n"}, "owner"),
])
async def test_bad_domain_input(store, kwargs, field):
    before = await snapshot(store)
    with pytest.raises(Invalid) as e:
        await store.create_domain("new.test", **kwargs)
    assert e.value.field == field
    assert await snapshot(store) == before


def make_cert(tmp_path, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


async def test_tls_certificate_must_match_key_and_cover_domain(store, tmp_path):
    cert, key = make_cert(tmp_path, "mail.new.test")
    d = await store.create_domain("new.test", tls_cert=cert, tls_key=key)
    assert d.tls_cert == cert
    other_cert, other_key = make_cert(tmp_path, "other.test")
    with pytest.raises(Invalid, match="does not cover"):
        await store.create_domain("x.test", tls_cert=other_cert, tls_key=other_key)
    with pytest.raises(Invalid, match="does not match"):
        await store.update_domain("new.test", tls_cert=cert, tls_key=other_key)


async def test_delete_domain_refuses_with_mailboxes_unless_cascade(store):
    await store.create_mailbox("alice@example.test")
    with pytest.raises(Conflict):
        await store.delete_domain("example.test")
    gone = await store.delete_domain("example.test", cascade=True)
    assert [m.name for m in gone] == ["alice"]
    assert await store.list_mailboxes() == []
    with pytest.raises(NotFound):
        await store.delete_domain("example.test")


async def test_every_change_is_audited(store):
    await store.create_mailbox("alice@example.test", password="pw-long-enough")
    await store.update_mailbox("alice@example.test", password="pw2-long-enough", actor="carol")
    rows = await store.list_audit(10)
    assert [r["action"] for r in rows[:3]] == ["mailbox.update", "mailbox.create",
                                               "domain.create"]
    assert rows[0]["actor"] == "carol" and "pw2" not in rows[0]["detail"]


async def test_autoresponder_fields_and_header_injection(store):
    await store.create_mailbox("alice@example.test")
    ar = await store.autoreplies.set("alice@example.test", enabled=True, message="Away",
                                       from_="Alice <alice@example.test>", subject="Out",
                                       start="2026-01-01", end="2026-01-31",
                                       attachment=Attachment("cv.pdf", "application/pdf", b"%PDF"))
    assert ar.active and ar.start == dt.date(2026, 1, 1) and ar.attachment.data == b"%PDF"
    ar = await store.autoreplies.set("alice@example.test", message="")
    assert not ar.active and ar.attachment is not None and ar.subject == "Out"
    for kwargs, field in [({"subject": "x\r\nBcc: evil@x.test"}, "subject"),
                          ({"from_": "A <a@b.test>\nX: y"}, "from"),
                          ({"start": "2026-02-01", "end": "2026-01-01"}, "end"),
                          ({"attachment": Attachment("../x", "text/plain", b"")}, "attachment")]:
        with pytest.raises(Invalid) as e:
            await store.autoreplies.set("alice@example.test", **kwargs)
        assert e.value.field == field
    ar = await store.autoreplies.set("alice@example.test", attachment=False)
    assert ar.attachment is None


async def test_claim_autoreply_is_race_safe_and_interval_bound(store):
    mb = await store.create_mailbox("alice@example.test")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    week = dt.timedelta(days=7)
    results = await asyncio.gather(*[store.autoreplies.claim(mb.id, "s@x.test", "k", now, week)
                                     for _ in range(8)])
    assert sorted(results) == [False] * 7 + [True]
    later = now + dt.timedelta(days=6)
    assert not await store.autoreplies.claim(mb.id, "s@x.test", "k", later, week)
    assert await store.autoreplies.claim(mb.id, "s@x.test", "k2", now, week)
    assert await store.autoreplies.claim(mb.id, "s@x.test", "k", now + dt.timedelta(days=8), week)
    await store.autoreplies.release(mb.id, "s@x.test", "k")
    assert await store.autoreplies.claim(mb.id, "s@x.test", "k", now + dt.timedelta(days=8), week)


async def test_login_tokens_are_single_use(store):
    await store.create_mailbox("alice@example.test")
    token = await store.tokens.create("alice@example.test", ttl=60)
    assert (await store.tokens.consume(token)).address == "alice@example.test"
    assert await store.tokens.consume(token) is None
    expired = await store.tokens.create("alice@example.test", ttl=-1)
    assert await store.tokens.consume(expired) is None


async def test_reopen_keeps_data_and_migrations_are_idempotent(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    s = await Store.open(url)
    await s.create_domain("example.test")
    await s.close()
    s = await Store.open(url)
    assert [d.name for d in await s.list_domains()] == ["example.test"]
    await s.close()


async def test_send_counters_grants_and_dkim_rows_on_both_engines(store):
    """The sending half's tables on SQLite and PostgreSQL: exact counting under concurrent
    writers (atomic upserts), sender grants, DKIM key rows."""
    from mailpolicy.core.dkimkey import DkimKey
    from mailpolicy.store.sending import Limit

    limit = [Limit("mailbox:a@example.test", 10, 0, "mailbox a")]
    results = await asyncio.gather(*(store.sending.count(limit, 1, 2, now=36000.0)
                                     for _ in range(16)))
    assert sum(r is None for r in results) == 10
    await store.create_mailbox("a@example.test")
    await store.sending.set_grants("a@example.test", ["@other.test", "b@example.test"])
    assert await store.sending.granted("x@other.test", "@other.test") == ["a@example.test"]
    key = DkimKey("example.test", "mp20261203r", "rsa", "QUJD", "/k", 1.0, 1.0)
    await store.dkim.add(key)
    await store.dkim.add(DkimKey("example.test", "mp20261204r", "rsa", "REVG", "/k2", 2.0, 5.0),
                         retire_others_at=9.0)
    rows = await store.dkim.list("example.test")
    assert [(k.selector, k.retire_at) for k in rows] == [("mp20261203r", 9.0),
                                                        ("mp20261204r", None)]
