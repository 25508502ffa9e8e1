"""This node in the cluster's registry: registered when the daemon serves, then marked as seen
every `cluster.heartbeat_seconds` (so `mailpolicy node list` shows who is unreachable)."""

from __future__ import annotations

import asyncio

import structlog

from mailpolicy.config import Config
from mailpolicy.core.cluster import advertised
from mailpolicy.store import Store

log = structlog.get_logger("mailpolicy.cluster")


async def register(cfg: Config, store: Store) -> None:
    """Create or update this node's row (addresses from the config) and mark it seen."""
    lmtp, imap = advertised(cfg)
    await store.nodes.register(cfg.cluster.node, lmtp=lmtp, imap=imap,
                               pop3_port=cfg.cluster.pop3_port)
    log.info("cluster.registered", node=cfg.cluster.node, lmtp=lmtp, imap=imap or None)


async def beat(cfg: Config, store: Store) -> None:
    """Mark this node seen forever (until cancelled); a store error is logged and retried."""
    while True:
        await asyncio.sleep(cfg.cluster.heartbeat_seconds)
        try:
            await store.nodes.heartbeat(cfg.cluster.node)
        except Exception as e:
            log.warning("cluster.heartbeat_failed", node=cfg.cluster.node, error=repr(e))
