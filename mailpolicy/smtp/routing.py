"""The route step: forwarded copies leave through their forwarding domain's outbound IP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from mailpolicy.core.replies import Reply
from mailpolicy.esmtp.route import Routes

if TYPE_CHECKING:
    from mailpolicy.core.directory import Directory
    from mailpolicy.smtp.pipeline import Transaction

log = structlog.get_logger("mailpolicy.filter")


class RouteStep:
    """Each recipient a domain of ours forwards to another domain (copies, do-not-save,
    redirects) goes back into Postfix through the routed listener of that domain's outbound
    IP (`tx.notes["routes"]`: recipient -> port); every other one takes the plain
    reinjection (core.outbound.reinjection decides)."""

    name = "route"

    def __init__(self, routes: Routes, directory: Directory) -> None:
        self.routes = routes
        self.directory = directory

    async def __call__(self, tx: Transaction) -> Reply | None:
        forwarded_by: dict[str, str] = tx.notes.get("forwarded_by", {})
        routes: dict[str, int] = {}
        for rcpt in tx.rcpt_tos:
            domain = forwarded_by.get(rcpt)
            if not domain:
                continue
            r = await self.routes.target(self.directory, domain, rcpt)
            if r.outbound_ip:
                routes[rcpt] = r.port
        if routes:
            log.info("filter.routed", id=tx.id, queue_id=tx.queue_id,
                     rcpts=",".join(routes), ports=",".join(map(str, routes.values())))
        tx.notes["routes"] = routes
        return None
