"""The admin app's typed keys: what a route may read from the app and the request."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mailpolicy.runtime.service import ConfigHolder
from mailpolicy.store import Store

# the running config (`.current`: a reload swaps it; read it per request)
CONFIG_KEY: web.AppKey[ConfigHolder] = web.AppKey("config", ConfigHolder)
STORE_KEY: web.AppKey[Store] = web.AppKey("store", Store)
# list + write of the SNI certificate maps as one step, so the last write is the newest
TLS_MAPS_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("tls_maps_lock", asyncio.Lock)
# request key: the peer's user name (RequestKey exists from aiohttp 3.13 on)
ACTOR: Any = web.RequestKey("actor", str) if hasattr(web, "RequestKey") else "actor"
