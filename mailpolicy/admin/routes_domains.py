"""Admin API: /v1/domains (CRUD) and the DNS records a domain should publish."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections import Counter
from typing import Any

import structlog
from aiohttp import web

from mailpolicy.admin import dnsrecords
from mailpolicy.admin.keys import ACTOR, CONFIG_KEY, STORE_KEY, TLS_MAPS_LOCK
from mailpolicy.admin.schema import (
    ApiError,
    Confirm,
    DomainCreate,
    DomainFields,
    changes,
    decode,
    domain_view,
)
from mailpolicy.auth import dkimkeys, publish
from mailpolicy.config import Config
from mailpolicy.core.addresses import AddressError, normalize_domain
from mailpolicy.core.model import Domain
from mailpolicy.deploy.tlsmaps import write_tls_maps
from mailpolicy.maildir import mailbox as files
from mailpolicy.store import integrity

routes = web.RouteTableDef()
log = structlog.get_logger("mailpolicy.admin")

DMARC_FIELDS = ("dmarc", "dmarc_policy", "dmarc_rua", "dmarc_adkim", "dmarc_aspf")


def parse_domain(value: str) -> str:
    try:
        return normalize_domain(value)
    except AddressError as e:
        raise ApiError(422, "invalid", str(e), "domain") from None


async def get_domain_or_404(request: web.Request, name: str) -> Domain:
    d = await request.app[STORE_KEY].get_domain(name)
    if d is None:
        raise ApiError(404, "not_found", f"no such domain: {name}", "domain")
    return d


def confirmed(request: web.Request, body: bytes = b"") -> None:
    """Destructive actions need confirm=true (query string or JSON body)."""
    if request.query.get("confirm", "").lower() in ("true", "1", "yes"):
        return
    if body.strip():
        from mailpolicy.admin.schema import Confirm

        if decode(body, Confirm).confirm:
            return
    raise ApiError(400, "confirm_required", "this action needs confirm=true", "confirm")


async def sync_dns(cfg: Config, domain: Domain) -> dict[str, Any] | None:
    """Publish or remove the domain's `_dmarc` record at the configured RFC 2136 server.
    The store change stands either way; the answer says whether DNS followed."""
    if not cfg.dmarc.update_server:
        return None
    try:
        await publish.sync_record(cfg, domain)
    except Exception as e:
        log.warning("admin.dns_update_failed", domain=domain.name, error=str(e))
        return {"ok": False, "error": str(e)}
    log.info("admin.dns_updated", domain=domain.name, dmarc=domain.dmarc)
    return {"ok": True, "error": ""}


async def sync_tls_maps(request: web.Request) -> None:
    """Rewrite the SNI certificate maps for Postfix and Dovecot after a domain change."""
    async with request.app[TLS_MAPS_LOCK]:
        await write_tls_maps(request.app[CONFIG_KEY].current,
                             await request.app[STORE_KEY].list_domains())


async def sync_dkim_dns(cfg: Config, store: Any, domain: str,
                        now: float | None = None) -> dict[str, Any] | None:
    """Publish the domain's DKIM selectors (and remove retired ones) at the RFC 2136 server."""
    if not cfg.dmarc.update_server:
        return None
    try:
        await publish.sync_dkim(cfg, domain, await store.dkim.list(domain), now)
    except Exception as e:
        log.warning("admin.dkim_dns_update_failed", domain=domain, error=str(e))
        return {"ok": False, "error": str(e)}
    return {"ok": True, "error": ""}


async def make_dkim_keys(request: web.Request, domain: str) -> dict[str, Any] | None:
    """A new domain's DKIM keys (and their DNS records where publishing is configured)."""
    cfg, store = request.app[CONFIG_KEY].current, request.app[STORE_KEY]
    await dkimkeys.make_keys(cfg, store, domain, actor=request[ACTOR])
    return await sync_dkim_dns(cfg, store, domain)


def _with_dns(view: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    if result is not None:
        view["dns_update"] = result
    return view


@routes.get("/v1/domains")
async def list_domains(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    domains = await store.list_domains()
    counts = Counter(m.domain for m in await store.list_mailboxes())
    return web.json_response({"domains": [domain_view(d, counts[d.name]) for d in domains]})


@routes.post("/v1/domains")
async def create_domain(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY].current
    body = decode(await request.read(), DomainCreate)
    kw = changes(body, skip=("name",))
    kw.setdefault("outbound_ip", "auto")
    kw.setdefault("dmarc_policy", cfg.dmarc.default_policy)
    kw.setdefault("dmarc_rua", cfg.dmarc.default_rua)
    d = await request.app[STORE_KEY].create_domain(body.name, actor=request[ACTOR], **kw)
    await sync_tls_maps(request)
    dns_result = await sync_dns(cfg, d) if d.dmarc else None
    dkim_dns = await make_dkim_keys(request, d.name)
    if dkim_dns is not None and not dkim_dns["ok"] and (dns_result is None or dns_result["ok"]):
        dns_result = dkim_dns
    view = _with_dns(domain_view(d, 0), dns_result)
    view["warnings"] = dnsrecords.warnings(d)
    return web.json_response(view, status=201,
                             headers={"Location": f"/v1/domains/{d.name}"})


@routes.get("/v1/domains/{domain}")
async def show_domain(request: web.Request) -> web.Response:
    d = await get_domain_or_404(request, parse_domain(request.match_info["domain"]))
    count = len(await request.app[STORE_KEY].list_mailboxes(d.name))
    return web.json_response(domain_view(d, count))


@routes.patch("/v1/domains/{domain}")
async def edit_domain(request: web.Request) -> web.Response:
    name = parse_domain(request.match_info["domain"])
    body = decode(await request.read(), DomainFields, immutable=("name",))
    kw = changes(body)
    store = request.app[STORE_KEY]
    old = await get_domain_or_404(request, name)
    d = await store.update_domain(name, actor=request[ACTOR], **kw)
    await sync_tls_maps(request)
    dns_result = None
    if any(f in kw for f in DMARC_FIELDS) and (d.dmarc or old.dmarc):
        dns_result = await sync_dns(request.app[CONFIG_KEY].current, d)
    count = len(await store.list_mailboxes(d.name))
    return web.json_response(_with_dns(domain_view(d, count), dns_result))


@routes.delete("/v1/domains/{domain}")
async def delete_domain(request: web.Request) -> web.Response:
    """Deletes the domain with all its mailboxes and their Maildirs (needs confirm=true)."""
    name = parse_domain(request.match_info["domain"])
    body = await request.read()
    confirmed(request, body)
    force = request.query.get("force", "").lower() in ("true", "1", "yes") or (
        bool(body.strip()) and decode(body, Confirm).force)
    old = await get_domain_or_404(request, name)
    store = request.app[STORE_KEY]
    deps = await store.domain_dependants(name)
    if deps and not force:  # refuse before the Maildirs are touched
        integrity.refuse(f"domain {name}", deps, "name")
    root = request.app[CONFIG_KEY].current.maildir_root
    path = root / name
    aside = await asyncio.to_thread(files.set_aside, path)
    cleared: list[str] = []
    try:
        deleted = await store.delete_domain(name, actor=request[ACTOR], cascade=True,
                                            force=force, cleared=cleared)
    except BaseException:
        await asyncio.to_thread(files.put_back, aside, path)
        raise
    await asyncio.to_thread(files.remove, aside)
    key_dir = dkimkeys.key_dir(request.app[CONFIG_KEY].current, name)
    await asyncio.to_thread(shutil.rmtree, key_dir, True)
    await sync_tls_maps(request)
    dns_result = (await sync_dns(request.app[CONFIG_KEY].current,
                                 dataclasses.replace(old, dmarc=False))
                  if old.dmarc else None)
    return web.json_response(_with_dns(
        {"deleted": name, "mailboxes": [m.address for m in deleted or ()], "cleared": cleared},
        dns_result))


@routes.get("/v1/domains/{domain}/dns-records")
async def dns_records(request: web.Request) -> web.Response:
    d = await get_domain_or_404(request, parse_domain(request.match_info["domain"]))
    keys = await request.app[STORE_KEY].dkim.list(d.name)
    recs = dnsrecords.records(request.app[CONFIG_KEY].current, d, keys)
    return web.json_response({"domain": d.name, "records": recs,
                              "zone": "\n".join(dnsrecords.zone_lines(recs)) + "\n",
                              "warnings": dnsrecords.warnings(d)})
