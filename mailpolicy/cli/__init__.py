"""The `mailpolicy` command: serve, postfix-config, dovecot-config and the admin verbs
(an HTTP client of the admin socket). May import every layer and the runtime."""

from mailpolicy.cli.main import main

__all__ = ["main"]
