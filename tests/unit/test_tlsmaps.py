"""tlsmaps: the SNI maps for Postfix (texthash) and Dovecot (local_name), and their writer."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailpolicy import config
from mailpolicy.core.model import Domain
from mailpolicy.core.tlscert import CertificateError
from mailpolicy.deploy import tlsmaps
from mailpolicy.deploy.tlsmaps import SniEntry


def fake_names(table: dict[str, list[str]]) -> tlsmaps.NamesOf:
    def names_of(cert: str, key: str) -> list[str]:
        if cert not in table:
            raise CertificateError(f"cannot read certificate {cert}")
        return table[cert]
    return names_of


def dom(name: str, cert: str = "", key: str = "") -> Domain:
    return Domain(name=name, tls_cert=cert, tls_key=key)


def test_names_the_certificate_covers_only() -> None:
    names = fake_names({"/c/both.pem": ["both.test", "mail.both.test"],
                        "/c/mail.pem": ["mail.only.test"],
                        "/c/wild.pem": ["*.wild.test"],
                        "/c/apex.pem": ["apex.test"]})
    got = tlsmaps.entries([dom("both.test", "/c/both.pem", "/k/both.key"),
                           dom("only.test", "/c/mail.pem", "/k/mail.key"),
                           dom("wild.test", "/c/wild.pem", "/k/wild.key"),
                           dom("apex.test", "/c/apex.pem", "/k/apex.key")], names)
    assert [e.name for e in got] == ["apex.test", "both.test", "mail.both.test",
                                     "mail.only.test", "mail.wild.test"]
    assert got[1] == SniEntry("both.test", "/k/both.key", "/c/both.pem")


def test_postfix_table_is_key_then_cert_per_name() -> None:
    text = tlsmaps.render_postfix([SniEntry("a.test", "/k/a.key", "/c/a.pem"),
                                   SniEntry("mail.a.test", "/k/a.key", "/c/a.pem")])
    rows = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert rows == ["a.test /k/a.key,/c/a.pem", "mail.a.test /k/a.key,/c/a.pem"]


def test_dovecot_local_name_blocks() -> None:
    text = tlsmaps.render_dovecot([SniEntry("mail.a.test", "/k/a.key", "/c/a.pem")])
    assert "local_name mail.a.test {\n  ssl_cert = </c/a.pem\n  ssl_key = </k/a.key\n}\n" in text
    body = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(body) == 4


def test_idna_names_are_a_labels() -> None:
    names = fake_names({"/c/idn.pem": ["mail.xn--bcher-kva.test"]})
    got = tlsmaps.entries([dom("bücher.test", "/c/idn.pem", "/k/idn.key")], names)
    assert [e.name for e in got] == ["mail.xn--bcher-kva.test"]
    assert tlsmaps.render_postfix(got).isascii()


def test_domains_without_usable_certificate_are_absent() -> None:
    names = fake_names({"/c/ok.pem": ["ok.test"], "/c/other.pem": ["other.test"]})
    got = tlsmaps.entries([dom("none.test"),  # no certificate
                           dom("half.test", "/c/ok.pem", ""),  # no key
                           dom("gone.test", "/c/missing.pem", "/k/x.key"),  # unreadable
                           dom("wrong.test", "/c/other.pem", "/k/o.key"),  # other names
                           dom("ok.test", "/c/ok.pem", "/k/ok.key")], names)
    assert [e.name for e in got] == ["ok.test"]
    assert "none.test" not in tlsmaps.render_postfix(got)
    assert tlsmaps.render_postfix([]).strip().splitlines()[0].startswith("#")


@pytest.mark.parametrize("path", [
    "relative/cert.pem", "/c/a b.pem", "/c/a,b.pem", "/c/a\nb.pem", "/c/../etc/shadow",
    "/c/a}.pem", "/c/a#.pem", '/c/a".pem', "/c/$x.pem", "/c/%d.pem", "/c/<x.pem", "",
    "/c/a\tb.pem", "/c/é.pem"])
def test_no_path_tricks(path: str) -> None:
    assert not tlsmaps.safe_path(path)
    names = fake_names({path: ["a.test"], "/c/a.pem": ["a.test"]})
    assert tlsmaps.entries([dom("a.test", path, "/k/a.key")], names) == []
    assert tlsmaps.entries([dom("a.test", "/c/a.pem", path)], names) == []


def test_a_name_that_is_itself_a_domain_keeps_its_own_certificate() -> None:
    names = fake_names({"/c/a.pem": ["a.test", "mail.a.test"], "/c/m.pem": ["mail.a.test"]})
    got = tlsmaps.entries([dom("mail.a.test", "/c/m.pem", "/k/m.key"),
                           dom("a.test", "/c/a.pem", "/k/a.key")], names)
    assert got == [SniEntry("a.test", "/k/a.key", "/c/a.pem"),
                   SniEntry("mail.a.test", "/k/m.key", "/c/m.pem")]


def test_write_atomic_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "postfix-sni"
    target.write_text("old\n")
    os.chmod(target, 0o666)
    tlsmaps.write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["postfix-sni"]  # no temporaries left


def test_write_atomic_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "dovecot-sni.conf"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        tlsmaps.write_atomic(target, "não-ascii\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dovecot-sni.conf"]


def _self_signed(tmp: Path, names: list[str]) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{names[0]}.pem", tmp / f"{names[0]}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_write_tls_maps_from_real_certificate_files(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = _self_signed(certs, ["mail.real.test"])
    state = tmp_path / "state"
    state.mkdir()
    cfg = config.from_dict({"paths": {"state_dir": str(state)}})
    ok = asyncio.run(tlsmaps.write_tls_maps(cfg, [dom("real.test", cert, key),
                                                  dom("plain.test")]))
    assert ok
    pf = (state / tlsmaps.POSTFIX_MAP).read_text()
    assert f"mail.real.test {key},{cert}\n" in pf
    assert "\nreal.test " not in pf and "plain.test" not in pf
    dc = (state / tlsmaps.DOVECOT_MAP).read_text()
    assert f"local_name mail.real.test {{\n  ssl_cert = <{cert}\n  ssl_key = <{key}\n}}" in dc
    for name in (tlsmaps.POSTFIX_MAP, tlsmaps.DOVECOT_MAP):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o640
    # a key that disappeared leaves the domain out instead of breaking Postfix/Dovecot
    os.unlink(key)
    asyncio.run(tlsmaps.write_tls_maps(cfg, [dom("real.test", cert, key)]))
    rows = [ln for ln in (state / tlsmaps.POSTFIX_MAP).read_text().splitlines()
            if not ln.startswith("#")]
    assert rows == []


def test_write_failure_is_reported_not_raised(tmp_path: Path) -> None:
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path / "missing")}})
    assert asyncio.run(tlsmaps.write_tls_maps(cfg, [])) is False
