"""A domain's own certificate is served by Postfix by SNI (tls_server_sni_maps), the default
certificate without SNI; Dovecot accepts the generated local_name blocks."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import smtplib
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from harness import Stack, default_run_user
from harness_servers import HOSTNAME, run, self_signed_certificate

from mailpolicy.cli.client import Client
from mailpolicy.deploy import tlsmaps

DOMAIN = "tls-e2e.test"
MAIL_NAME = f"mail.{DOMAIN}"


def self_signed(directory: Path, name: str, owner: str) -> tuple[Path, Path]:
    """key and certificate files for `name`: the key owner's and the postfix group's only."""
    key_path, cert_path = self_signed_certificate(directory, name, stem=name)
    os.chown(key_path, pwd.getpwnam(owner).pw_uid, grp.getgrnam("postfix").gr_gid)
    key_path.chmod(0o640)
    cert_path.chmod(0o644)
    return key_path, cert_path


def served_certificate(port: int, server_name: str | None) -> x509.Certificate:
    """The certificate Postfix presents after STARTTLS (SNI = server_name, or none)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.e2e.test", timeout=30) as s:
        s.ehlo()
        assert s.has_extn("starttls"), "Postfix does not offer STARTTLS"
        code, _ = s.docmd("STARTTLS")
        assert code == 220
        tls = ctx.wrap_socket(s.sock, server_hostname=server_name)
        der = tls.getpeercert(binary_form=True)
        s.sock = tls
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_for_certificate(port: int, server_name: str | None, want: x509.Certificate,
                         timeout: float = 30) -> x509.Certificate:
    """After `postfix reload`, smtpd processes started before it may answer for a moment."""
    end = time.monotonic() + timeout
    while True:
        got = served_certificate(port, server_name)
        if got == want or time.monotonic() > end:
            return got
        time.sleep(0.5)


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mailpolicy-e2e-certs-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_domain_certificate_is_served_by_sni(stack_factory: Callable[..., Stack],
                                             certs: Path) -> None:
    owner = default_run_user()
    default_key, default_cert = self_signed(certs, HOSTNAME, owner)
    key, cert = self_signed(certs, MAIL_NAME, owner)
    stack = stack_factory(main_cf={"smtpd_tls_security_level": "may",
                                   "smtpd_tls_chain_files": f"{default_key},{default_cert}",
                                   "smtpd_tls_loglevel": "1"},
                          )
    want_default = x509.load_pem_x509_certificate(default_cert.read_bytes())
    want_domain = x509.load_pem_x509_certificate(cert.read_bytes())
    port = stack.ports["smtpd"]
    # the daemon wrote an (empty) map at start, so Postfix's TLS already works
    assert served_certificate(port, MAIL_NAME) == want_default

    Client(str(stack.cfg.admin_socket)).call(
        "POST", "/v1/domains", {"name": DOMAIN, "tls_cert": str(cert), "tls_key": str(key)})
    table = (stack.cfg.state_dir / tlsmaps.POSTFIX_MAP).read_text()
    assert f"{MAIL_NAME} {key},{cert}\n" in table
    assert f"\n{DOMAIN} " not in table  # the certificate does not cover the bare domain
    stack.postfix.postfix("reload")

    got = wait_for_certificate(port, MAIL_NAME, want_domain)
    assert got == want_domain, (f"SNI {MAIL_NAME} got {got.subject.rfc4514_string()}\n"
                                + stack.diagnose())
    assert served_certificate(port, None) == want_default  # no SNI: the default certificate
    assert served_certificate(port, "other.e2e.test") == want_default  # unknown name: default
    assert "warning" not in run(["/usr/sbin/postconf", "-c", str(stack.postfix.config_dir),
                                 "-n"]).stderr

    # Dovecot (ssl = no in the harness, so nothing is served) parses the generated blocks
    conf = str(stack.dovecot.conf)
    res = run(["/usr/bin/doveconf", "-c", conf, "-n"])
    assert f"local_name {MAIL_NAME} {{" in res.stdout, res.stdout
    stack.doveadm("reload")

    # deleting the domain takes its certificate out of the map
    Client(str(stack.cfg.admin_socket)).call("DELETE", f"/v1/domains/{DOMAIN}",
                                             query={"confirm": "true"})
    assert MAIL_NAME not in (stack.cfg.state_dir / tlsmaps.POSTFIX_MAP).read_text()
    stack.postfix.postfix("reload")
    assert wait_for_certificate(port, MAIL_NAME, want_default) == want_default
