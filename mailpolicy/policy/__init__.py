"""Postfix policy delegation service (check_policy_service): protocol, rules, server."""

from .server import start

__all__ = ["start"]
