"""Admin API: /v1/mailboxes (CRUD, usage, clear, autoresponder, client settings, log-in-as)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from aiohttp import web

from mailpolicy.admin.attachments import decode_attachment
from mailpolicy.admin.keys import ACTOR, CONFIG_KEY, STORE_KEY
from mailpolicy.admin.routes_domains import confirmed, parse_domain
from mailpolicy.admin.schema import (
    UNSET,
    ApiError,
    AutoresponderFields,
    Confirm,
    LoginAs,
    LoginTokenFields,
    MailboxCreate,
    MailboxFields,
    autoresponder_view,
    changes,
    decode,
    mailbox_view,
)
from mailpolicy.core.cluster import is_remote
from mailpolicy.core.model import Mailbox
from mailpolicy.maildir import mailbox as files
from mailpolicy.store import Store

routes = web.RouteTableDef()

TOKEN_TTL = dt.timedelta(minutes=5)


def _paths(request: web.Request, m: Mailbox) -> tuple[Path, Path]:
    """The mailbox's Maildir and the directory holding it."""
    root = request.app[CONFIG_KEY].current.maildir_root
    return files.maildir_for(root, m.domain, m.name), files.mailbox_home(root, m.domain, m.name)


async def mailbox_or_404(request: web.Request) -> Mailbox:
    address = request.match_info["address"]
    if "\x00" in address or len(address) > 320:
        raise ApiError(422, "invalid", "not a mailbox address", "address")
    m = await request.app[STORE_KEY].get_mailbox(address)
    if m is None:
        raise ApiError(404, "not_found", f"no such mailbox: {address}", "address")
    return m


def _at_home(request: web.Request, m: Mailbox) -> None:
    """Acting on a Maildir (delete, clear) happens on the mailbox's home node only."""
    if is_remote(m, request.app[CONFIG_KEY].current.cluster.node):
        raise ApiError(409, "conflict", f"{m.address} lives on node {m.home_node}: "
                       "run this there", "address")


async def _with_usage(request: web.Request, boxes: list[Mailbox],
                      active: set[int]) -> list[dict[str, Any]]:
    cfg = request.app[CONFIG_KEY].current
    root = cfg.maildir_root
    # a mailbox at home on another node: the figure its home node keeps in the store
    remote = {m.id for m in boxes if is_remote(m, cfg.cluster.node)}
    figures = await request.app[STORE_KEY].nodes.usages(remote) if remote else {}
    dirs = [(files.maildir_for(root, m.domain, m.name), m.max_size or 0) for m in boxes]
    local = await asyncio.to_thread(lambda: [
        None if m.id in remote else files.usage(d, limit)
        for m, (d, limit) in zip(boxes, dirs, strict=True)])
    used = [figures.get(m.id, 0) if u is None else u for m, u in zip(boxes, local, strict=True)]
    return [mailbox_view(m, u, m.id in active) for m, u in zip(boxes, used, strict=True)]


async def _active(store: Store, domain: str | None) -> set[int]:
    return set(await store.autoreplies.active(domain))


def _mailbox_changes(body: MailboxFields, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    kw = changes(body, skip)
    if "max_size" in kw and kw["max_size"] is None:
        kw["max_size"] = "unlimited"  # the store reads None as "leave unchanged"
    return kw


@routes.get("/v1/mailboxes")
async def list_mailboxes(request: web.Request) -> web.Response:
    """Name, properties (enabled, forwards, no_save, autoreply, over_quota), usage used/max."""
    store = request.app[STORE_KEY]
    domain = None
    if "domain" in request.query:
        domain = parse_domain(request.query["domain"])
        if await store.get_domain(domain) is None:
            raise ApiError(404, "not_found", f"no such domain: {domain}", "domain")
    boxes = await store.list_mailboxes(domain)
    views = await _with_usage(request, boxes, await _active(store, domain))
    return web.json_response({"mailboxes": views})


@routes.post("/v1/mailboxes")
async def create_mailbox(request: web.Request) -> web.Response:
    body = decode(await request.read(), MailboxCreate)
    m = await request.app[STORE_KEY].create_mailbox(
        body.address, actor=request[ACTOR], **_mailbox_changes(body, skip=("address",)))
    return web.json_response(mailbox_view(m, 0, False), status=201,
                             headers={"Location": f"/v1/mailboxes/{m.address}"})


@routes.get("/v1/mailboxes/{address}")
async def show_mailbox(request: web.Request) -> web.Response:
    m = await mailbox_or_404(request)
    ar = await request.app[STORE_KEY].autoreplies.get(m.id)
    [view] = await _with_usage(request, [m], {m.id} if ar is not None and ar.active else set())
    return web.json_response(view)


@routes.patch("/v1/mailboxes/{address}")
async def edit_mailbox(request: web.Request) -> web.Response:
    """Change any field but the name and the domain."""
    body = decode(await request.read(), MailboxFields, immutable=("name", "domain", "address"))
    m = await mailbox_or_404(request)
    store = request.app[STORE_KEY]
    m = await store.update_mailbox(m.address, actor=request[ACTOR],
                                 **_mailbox_changes(body))
    ar = await store.autoreplies.get(m.id)
    [view] = await _with_usage(request, [m], {m.id} if ar is not None and ar.active else set())
    return web.json_response(view)


@routes.delete("/v1/mailboxes/{address}")
async def delete_mailbox(request: web.Request) -> web.Response:
    """Delete the mailbox and its Maildir (needs confirm=true). Refused (409, naming them)
    while domains redirect to it or have it as postmaster, or mailboxes copy to it; with
    force=true those are cleared too and listed in `cleared`."""
    body = await request.read()
    confirmed(request, body)
    force = request.query.get("force", "").lower() in ("true", "1", "yes") or (
        bool(body.strip()) and decode(body, Confirm).force)
    m = await mailbox_or_404(request)
    _at_home(request, m)
    _maildir, home = _paths(request, m)
    store = request.app[STORE_KEY]
    await store.check_delete_mailbox(m.address, force=force)  # refuse before touching files
    aside = await asyncio.to_thread(files.set_aside, home)
    cleared: list[str] = []
    try:
        await store.delete_mailbox(m.address, actor=request[ACTOR], force=force,
                                   cleared=cleared)
    except BaseException:
        await asyncio.to_thread(files.put_back, aside, home)
        raise
    await asyncio.to_thread(files.remove, aside)
    return web.json_response({"deleted": m.address, "cleared": cleared})


@routes.post("/v1/mailboxes/{address}/clear")
async def clear_mailbox(request: web.Request) -> web.Response:
    """Empty every folder of the mailbox, keep the mailbox (needs confirm=true)."""
    confirmed(request, await request.read())
    m = await mailbox_or_404(request)
    _at_home(request, m)
    maildir, _home = _paths(request, m)
    freed = await asyncio.to_thread(files.clear, maildir)
    await request.app[STORE_KEY].audit(request[ACTOR], "mailbox.clear", m.address,
                                       {"freed": freed})
    return web.json_response({"cleared": m.address, "freed": freed})


@routes.get("/v1/mailboxes/{address}/autoresponder")
async def show_autoresponder(request: web.Request) -> web.Response:
    m = await mailbox_or_404(request)
    ar = await request.app[STORE_KEY].autoreplies.get(m.id)
    return web.json_response({"address": m.address, **autoresponder_view(ar)})


@routes.put("/v1/mailboxes/{address}/autoresponder")
async def set_autoresponder(request: web.Request) -> web.Response:
    """Set the autoresponder; fields left out keep their value, `attachment: null` removes
    the attachment. An empty message means off."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", "attachment is larger than the limit",
                       "attachment") from None
    body = decode(raw, AutoresponderFields)
    m = await mailbox_or_404(request)
    kw = changes(body, skip=("attachment",))
    if body.attachment is None:
        kw["attachment"] = False
    elif body.attachment is not UNSET:
        kw["attachment"] = decode_attachment(body.attachment,
                                             request.app[CONFIG_KEY].current.limits.attachment_max)
    ar = await request.app[STORE_KEY].autoreplies.set(m.address, actor=request[ACTOR], **kw)
    return web.json_response({"address": m.address, **autoresponder_view(ar)})


@routes.get("/v1/mailboxes/{address}/settings")
async def client_settings(request: web.Request) -> web.Response:
    """What a user needs to set up a mail client for this mailbox."""
    m = await mailbox_or_404(request)
    cs = request.app[CONFIG_KEY].current.client_settings

    def ep(e: Any) -> dict[str, Any]:
        return {"host": e.host, "port": e.port, "security": e.security, "username": m.address,
                "authentication": "password"}

    out: dict[str, Any] = {"address": m.address, "login": m.address, "imap": ep(cs.imap)}
    if cs.pop3_enabled:
        out["pop3"] = ep(cs.pop3)
    sub = request.app[CONFIG_KEY].current.submission
    if sub.enabled and sub.submission:  # what the deployment offers (postfix-config emits it)
        out["smtp"] = ep(cs.smtp)
    if sub.enabled and sub.submissions:
        out["smtps"] = ep(type(cs.smtp)(host=cs.smtp.host, port=465, security="ssl"))
    return web.json_response(out)


@routes.post("/v1/mailboxes/{address}/login-token")
async def login_token(request: web.Request) -> web.Response:
    """A short-lived token to log in as the mail user (the store keeps its hash): single-use
    here (POST /v1/login-as), as an IMAP password until it expires (Dovecot's token passdb).
    Optional body {"ttl": seconds}, 1..3600, default 300."""
    body = decode(await request.read(), LoginTokenFields)
    m = await mailbox_or_404(request)
    ttl = TOKEN_TTL.total_seconds() if body.ttl is UNSET else float(body.ttl)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
    token = await request.app[STORE_KEY].tokens.create(m.address, actor=request[ACTOR], ttl=ttl)
    return web.json_response({"address": m.address, "token": token,
                              "expires_at": expires.isoformat(timespec="seconds")}, status=201)


@routes.post("/v1/login-as")
async def login_as(request: web.Request) -> web.Response:
    """Redeem a log-in-as token once: answers the mailbox it was issued for."""
    body = decode(await request.read(), LoginAs)
    m = await request.app[STORE_KEY].tokens.consume(body.token)
    if m is None:
        raise ApiError(403, "invalid_token", "token unknown, used or expired", "token")
    return web.json_response({"address": m.address})
