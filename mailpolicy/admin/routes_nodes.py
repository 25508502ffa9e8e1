"""Admin API: /v1/nodes, the node registry of a cluster (add, list, show, edit, drain,
remove)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from mailpolicy.admin import move
from mailpolicy.admin.keys import ACTOR, CONFIG_KEY, STORE_KEY
from mailpolicy.admin.schema import ApiError, changes, decode
from mailpolicy.core.cluster import reachable
from mailpolicy.core.model import Node

routes = web.RouteTableDef()

HostPort = Annotated[str, Meta(max_length=261, pattern=r"^[^\x00-\x20\x7f]*$")]
Port = Annotated[int, Meta(ge=1, le=65535)]


class NodeFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lmtp: HostPort | UnsetType = UNSET
    imap: HostPort | UnsetType = UNSET  # "" = no Dovecot to proxy to
    pop3_port: Port | UnsetType = UNSET
    state: Literal["active", "draining", "down"] | UnsetType = UNSET


class NodeCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, Meta(max_length=63)]
    lmtp: HostPort
    imap: HostPort = ""
    pop3_port: Port = 110


def node_view(n: Node, totals: dict[str, tuple[int, int]], heartbeat: float,
              ) -> dict[str, Any]:
    count, used = totals.get(n.name, (0, 0))
    return {"name": n.name, "lmtp": n.lmtp,
            "imap": f"{n.imap_host}:{n.imap_port}" if n.imap_host else "",
            "pop3_port": n.pop3_port, "state": str(n.state), "last_seen": n.last_seen,
            "reachable": reachable(n, heartbeat), "mailboxes": count, "used": used}


async def _view(request: web.Request, n: Node) -> dict[str, Any]:
    totals = await request.app[STORE_KEY].nodes.totals()
    return node_view(n, totals, request.app[CONFIG_KEY].current.cluster.heartbeat_seconds)


async def _node_or_404(request: web.Request) -> Node:
    name = request.match_info["name"]
    n = await request.app[STORE_KEY].nodes.get(name) if len(name) <= 63 else None
    if n is None:
        raise ApiError(404, "not_found", f"no such node: {name}", "name")
    return n


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """Every node with its state, whether its daemon is seen, and its mailboxes and bytes."""
    store = request.app[STORE_KEY]
    totals = await store.nodes.totals()
    hb = request.app[CONFIG_KEY].current.cluster.heartbeat_seconds
    return web.json_response({"nodes": [node_view(n, totals, hb)
                                        for n in await store.nodes.list()]})


@routes.post("/v1/nodes")
async def add_node(request: web.Request) -> web.Response:
    body = decode(await request.read(), NodeCreate)
    n = await request.app[STORE_KEY].nodes.add(body.name, lmtp=body.lmtp, imap=body.imap,
                                               pop3_port=body.pop3_port, actor=request[ACTOR])
    return web.json_response(await _view(request, n), status=201,
                             headers={"Location": f"/v1/nodes/{n.name}"})


@routes.get("/v1/nodes/{name}")
async def show_node(request: web.Request) -> web.Response:
    return web.json_response(await _view(request, await _node_or_404(request)))


@routes.patch("/v1/nodes/{name}")
async def edit_node(request: web.Request) -> web.Response:
    """Change a node's addresses or its state (active, draining, down)."""
    body = decode(await request.read(), NodeFields, immutable=("name",))
    n = await _node_or_404(request)
    n = await request.app[STORE_KEY].nodes.edit(n.name, actor=request[ACTOR], **changes(body))
    return web.json_response(await _view(request, n))


@routes.post("/v1/nodes/{name}/drain")
async def drain_node(request: web.Request) -> web.Response:
    """No new mailboxes on this node (its mailboxes stay until moved)."""
    n = await _node_or_404(request)
    n = await request.app[STORE_KEY].nodes.edit(n.name, state="draining", actor=request[ACTOR])
    return web.json_response(await _view(request, n))


@routes.delete("/v1/nodes/{name}")
async def remove_node(request: web.Request) -> web.Response:
    """Remove a node that is home to no mailbox."""
    n = await _node_or_404(request)
    await request.app[STORE_KEY].nodes.remove(n.name, actor=request[ACTOR])
    return web.json_response({"removed": n.name})


class MoveBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    to: Annotated[str, Meta(max_length=63)]


@routes.post("/v1/mailboxes/{address}/move")
async def move_mailbox(request: web.Request) -> web.Response:
    """Move a mailbox to another node (run on its home node): doveadm backup, deliveries
    deferred only for the final switch, new home, old copy removed."""
    body = decode(await request.read(), MoveBody)
    address = request.match_info["address"]
    store = request.app[STORE_KEY]
    m = await store.get_mailbox(address) if len(address) <= 320 else None
    if m is None:
        raise ApiError(404, "not_found", f"no such mailbox: {address}", "address")
    try:
        res = await move.move(request.app[CONFIG_KEY].current, store, m, body.to,
                              actor=request[ACTOR])
    except move.MoveError as e:
        raise ApiError(e.status, "move_failed" if e.status >= 500 else "conflict", e.message,
                       e.field) from None
    return web.json_response(res)
