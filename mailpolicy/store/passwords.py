"""Password hashes in Dovecot's `{SCHEME}` form (libpass); `{ARGON2ID}` by default."""

from __future__ import annotations

from passlib.context import CryptContext
from passlib.hash import argon2, bcrypt, sha512_crypt

MAX_PASSWORD = 1024
_CTX = CryptContext(schemes=["argon2", "bcrypt", "sha512_crypt", "sha256_crypt"])


def check_password(password: str) -> None:
    """Refuse passwords that no scheme can hold safely."""
    if not password:
        raise ValueError("password is empty")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"password is longer than {MAX_PASSWORD} characters")
    if any(c in password for c in "\x00\r\n"):
        raise ValueError("password contains NUL or line breaks")


def hash_password(password: str, scheme: str = "ARGON2ID") -> str:
    """Hash for Dovecot's passdb, e.g. `{ARGON2ID}$argon2id$v=19$...` (CPU-heavy: use a thread)."""
    check_password(password)
    if scheme == "ARGON2ID":
        h = argon2.using(type="ID", memory_cost=65536, rounds=3, parallelism=1).hash(password)
    elif scheme == "BLF-CRYPT":
        if len(password.encode()) > 72:
            raise ValueError("BLF-CRYPT passwords are limited to 72 bytes")
        h = bcrypt.using(ident="2y", rounds=10).hash(password)
    elif scheme == "SHA512-CRYPT":
        h = sha512_crypt.using(rounds=5000).hash(password)
    else:
        raise ValueError(f"unsupported scheme {scheme!r}")
    return f"{{{scheme}}}{h}"


def verify_password(password: str, stored: str) -> bool:
    """Check a password against a stored `{SCHEME}hash` (or bare hash)."""
    if not stored:
        return False
    h = stored.split("}", 1)[1] if stored.startswith("{") else stored
    try:
        return bool(_CTX.verify(password, h))
    except (ValueError, TypeError):
        return False
