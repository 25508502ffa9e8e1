"""Postfix socketmap lookup tables: domains, mailboxes, sender-dependent transport.

Service. May import: config, core, runtime layers (logs, timers, service).
"""

from mailpolicy.socketmap.server import start

__all__ = ["start"]
