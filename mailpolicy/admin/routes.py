"""Admin API route table: domains, mailboxes, audit log and the OpenAPI document."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from mailpolicy.admin import routes_domains, routes_mailboxes, routes_nodes, routes_sending
from mailpolicy.admin.keys import STORE_KEY
from mailpolicy.admin.schema import ApiError

routes = web.RouteTableDef()


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document kept in the repository (admin/openapi.json)."""
    text = resources.files("mailpolicy.admin").joinpath("openapi.json").read_text("utf-8")
    return json.loads(text)


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/v1/audit")
async def audit(request: web.Request) -> web.Response:
    """The newest audit-log rows (who, what, when), optionally for one target."""
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= 10000:
        raise ApiError(422, "invalid", "limit must be between 1 and 10000", "limit")
    target = request.query.get("target") or None
    rows = await request.app[STORE_KEY].list_audit(limit=limit, target=target)
    return web.json_response({"entries": rows})


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
    app.add_routes(routes_domains.routes)
    app.add_routes(routes_mailboxes.routes)
    app.add_routes(routes_sending.routes)
    app.cleanup_ctx.append(routes_sending.dkim_dns_upkeep)
    app.add_routes(routes_nodes.routes)
