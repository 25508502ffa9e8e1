"""Postfix policy delegation service (check_policy_service): protocol, rules, server.

Service. May import: config, core, maildir, runtime layers (logs, timers, service).
"""

from mailpolicy.policy.server import start

__all__ = ["start"]
