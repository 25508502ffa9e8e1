"""TLS certificate checks for a mail domain: files exist, key matches, certificate covers it."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class CertificateError(ValueError):
    """The certificate or key is unusable for the domain; the message says why."""


def _covers(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.count(".") >= pattern.count(".") and name.split(".", 1)[1] == pattern[2:]
    return pattern == name


def check_certificate(cert_path: str, key_path: str, domain: str) -> None:
    """Raise CertificateError unless both files load, match, and the cert names `domain`
    (or `mail.`/`*.` of it) in its subjectAltName."""
    cert = load_certificate(cert_path)
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as e:
        raise CertificateError(f"cannot read key {key_path}: {e.strerror}") from None
    except (ValueError, TypeError):
        raise CertificateError(f"{key_path} is not an unencrypted PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise CertificateError("the key does not match the certificate")
    names = dns_names(cert)
    if not covered_names(names, domain):
        raise CertificateError(f"the certificate does not cover {domain} (names: {names})")


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names in the subjectAltName (else the subject's common names)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value)
                for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def covered_names(names: list[str], domain: str) -> list[str]:
    """Which of `domain` and `mail.<domain>` the certificate names cover (in that order)."""
    return [w for w in (domain, f"mail.{domain}") if any(_covers(p, w) for p in names)]


def load_certificate(cert_path: str) -> x509.Certificate:
    """The PEM certificate at `cert_path` (CertificateError if unreadable or not PEM)."""
    try:
        return x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except OSError as e:
        raise CertificateError(f"cannot read certificate {cert_path}: {e.strerror}") from None
    except ValueError:
        raise CertificateError(f"{cert_path} is not a PEM certificate") from None


def certificate_names(cert_path: str) -> list[str]:
    """The DNS names of the PEM certificate at `cert_path` (CertificateError if unreadable)."""
    return dns_names(load_certificate(cert_path))
