"""Maildir++ quota: usage from `maildirsize` (read, append, rescan) and clearing a mailbox."""

from .clear import clear_contents
from .usage import Limits, add_usage, current_usage, rescan

__all__ = ["Limits", "add_usage", "clear_contents", "current_usage", "rescan"]
