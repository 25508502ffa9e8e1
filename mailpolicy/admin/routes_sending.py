"""Admin API: a mailbox's sending rights and limits (/v1/mailboxes/{address}/sending) and a
domain's DKIM keys (/v1/domains/{domain}/dkim)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET, UnsetType

from mailpolicy.admin.keys import ACTOR, CONFIG_KEY, STORE_KEY
from mailpolicy.admin.routes_domains import get_domain_or_404, parse_domain, sync_dkim_dns
from mailpolicy.admin.routes_mailboxes import mailbox_or_404
from mailpolicy.admin.schema import Names, decode
from mailpolicy.auth import dkimkeys, signing
from mailpolicy.core.dkimkey import DkimKey, current
from mailpolicy.store.sending import limit_value

routes = web.RouteTableDef()
log = structlog.get_logger("mailpolicy.admin")


class SendingFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    may_send_as: Names | UnsetType = UNSET  # user@domain or @domain (any address of it)
    messages_per_hour: int | UnsetType | None = UNSET  # null = the configured default
    recipients_per_hour: int | UnsetType | None = UNSET


async def sending_view(request: web.Request, mailbox_id: int, address: str) -> dict[str, Any]:
    store = request.app[STORE_KEY]
    cfg = request.app[CONFIG_KEY].current.sending
    m, r = await store.sending.limits(mailbox_id)
    return {"address": address, "may_send_as": list(await store.sending.grants(mailbox_id)),
            "messages_per_hour": m, "recipients_per_hour": r,
            "effective": {"messages_per_hour": cfg.messages_per_hour if m is None else m,
                          "recipients_per_hour": cfg.recipients_per_hour if r is None else r}}


@routes.get("/v1/mailboxes/{address}/sending")
async def show_sending(request: web.Request) -> web.Response:
    m = await mailbox_or_404(request)
    return web.json_response(await sending_view(request, m.id, m.address))


@routes.patch("/v1/mailboxes/{address}/sending")
async def edit_sending(request: web.Request) -> web.Response:
    """Change the addresses the mailbox may also send as and its own send limits."""
    body = decode(await request.read(), SendingFields)
    m = await mailbox_or_404(request)
    store = request.app[STORE_KEY]
    for name in ("messages_per_hour", "recipients_per_hour"):  # refused before any change
        if getattr(body, name) is not UNSET:
            limit_value(getattr(body, name), name)
    if body.may_send_as is not UNSET:
        await store.sending.set_grants(m.address, body.may_send_as, actor=request[ACTOR])
    if body.messages_per_hour is not UNSET or body.recipients_per_hour is not UNSET:
        cur_m, cur_r = await store.sending.limits(m.id)
        await store.sending.set_limits(
            m.address, actor=request[ACTOR],
            messages_per_hour=cur_m if body.messages_per_hour is UNSET else body.messages_per_hour,
            recipients_per_hour=(cur_r if body.recipients_per_hour is UNSET
                                 else body.recipients_per_hour))
    return web.json_response(await sending_view(request, m.id, m.address))


def dkim_view(keys: list[DkimKey], now: float) -> list[dict[str, Any]]:
    signing_now = {k.selector for k in current(keys, now)}
    return [{"selector": k.selector, "algorithm": k.algorithm,
             "name": f"{k.selector}._domainkey.{k.domain}.",
             "record": signing.dns_txt(k.public_key, k.algorithm),  # type: ignore[arg-type]
             "active_from": _iso(k.active_from), "retire_at": _iso(k.retire_at),
             "published": k.published(now), "signing": k.selector in signing_now}
            for k in keys]


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(
        timespec="seconds")


@routes.get("/v1/domains/{domain}/dkim")
async def show_dkim(request: web.Request) -> web.Response:
    d = await get_domain_or_404(request, parse_domain(request.match_info["domain"]))
    keys = await request.app[STORE_KEY].dkim.list(d.name)
    return web.json_response({"domain": d.name, "keys": dkim_view(keys, time.time())})


@routes.post("/v1/domains/{domain}/dkim/rotate")
async def rotate_dkim(request: web.Request) -> web.Response:
    """New selectors: published now, signing after dkim.rotation_delay_hours; the old ones
    are retired as long after that."""
    d = await get_domain_or_404(request, parse_domain(request.match_info["domain"]))
    store, cfg = request.app[STORE_KEY], request.app[CONFIG_KEY].current
    await dkimkeys.rotate(cfg, store, d.name, actor=request[ACTOR])
    keys = await store.dkim.list(d.name)
    view: dict[str, Any] = {"domain": d.name, "keys": dkim_view(keys, time.time())}
    dns = await sync_dkim_dns(cfg, store, d.name)
    if dns is not None:
        view["dns_update"] = dns
    return web.json_response(view)


DKIM_UPKEEP_INTERVAL = 3600.0  # seconds between checks for DKIM selectors that retired


async def retire_due(cfg: Any, store: Any, now: float, window: float) -> list[str]:
    """Re-publish the DKIM records of domains with a selector retired in (now - window, now],
    so retired selectors leave DNS; returns the domains DNS now matches."""
    done = []
    for d in await store.list_domains():
        keys = await store.dkim.list(d.name)
        if any(k.retire_at is not None and now - window < k.retire_at <= now for k in keys):
            result = await sync_dkim_dns(cfg, store, d.name, now)
            if result is not None and result["ok"]:
                done.append(d.name)
    return done


async def dkim_dns_upkeep(app: web.Application) -> Any:
    """aiohttp cleanup context: with an RFC 2136 server configured, retired DKIM selectors are
    removed from DNS within DKIM_UPKEEP_INTERVAL; the task ends with the admin server."""
    cfg, store = app[CONFIG_KEY].current, app[STORE_KEY]

    async def upkeep() -> None:
        while True:
            await asyncio.sleep(DKIM_UPKEEP_INTERVAL)
            try:
                await retire_due(cfg, store, time.time(), 2 * DKIM_UPKEEP_INTERVAL)
            except Exception as e:  # the next round tries again
                log.warning("admin.dkim_upkeep_failed", error=str(e))

    task = asyncio.create_task(upkeep()) if cfg.dmarc.update_server else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
