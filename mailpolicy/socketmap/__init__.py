"""Postfix socketmap lookup tables: domains, mailboxes, sender-dependent transport."""

from .server import start

__all__ = ["start"]
