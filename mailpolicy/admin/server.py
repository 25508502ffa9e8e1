"""The admin socket: aiohttp over a Unix socket, SO_PEERCRED authorisation, JSON errors."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from mailpolicy.admin.keys import ACTOR, CONFIG_KEY, STORE_KEY, TLS_MAPS_LOCK
from mailpolicy.admin.routes import add_routes
from mailpolicy.admin.schema import ApiError
from mailpolicy.config import Config
from mailpolicy.runtime.service import ConfigHolder
from mailpolicy.runtime.sockets import clear_stale_socket
from mailpolicy.store import Store, StoreError

log = structlog.get_logger("mailpolicy.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def peer_credentials(request: web.Request) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of the Unix socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def is_admin(uid: int, gid: int, group: str) -> bool:
    """root, the daemon's own user (it owns the store anyway; this is what lets `make run` and
    the CLI work as one unprivileged user), or a member of the admin group (primary or
    supplementary, via pwd/grp)."""
    if uid == 0 or uid == os.getuid():
        return True
    if not group:
        return False
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return False
    if gid == g.gr_gid:
        return True
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    if pw.pw_name in g.gr_mem or pw.pw_gid == g.gr_gid:
        return True
    try:
        return g.gr_gid in os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        return False


def error_response(status: int, code: str, message: str, field: str = "") -> web.Response:
    return web.json_response({"error": code, "message": message, "field": field}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal becomes `{"error", "message", "field"}` with a 4xx status."""
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message, e.field)
    except StoreError as e:
        return error_response(e.status, e.code, e.message, e.field)
    except web.HTTPRequestEntityTooLarge as e:
        return error_response(413, "too_large", e.text or "request body too large")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "bad_request")
        return error_response(e.status, code, e.reason)
    except Exception as e:
        if _disk_full(e):
            log.warning("admin.disk_full", method=request.method, path=request.path,
                        error=repr(e))
            return error_response(507, "disk_full", DISK_FULL)
        log.exception("admin.request_failed", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error, nothing was changed")


DISK_FULL = ("the disk is full, nothing was changed; free space first (`mailpolicy mailbox "
             "clear ADDRESS` works on a full disk), then try again")


def _disk_full(e: BaseException) -> bool:
    """An ENOSPC/EDQUOT, or SQLite's "database or disk is full" (SQLITE_FULL)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(e):
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authorisation before any handler: root, the daemon's user and the admin group only."""
    creds = peer_credentials(request)
    if creds is None:
        raise ApiError(403, "forbidden", "peer credentials unavailable")
    _pid, uid, gid = creds
    group = request.app[CONFIG_KEY].current.admin.group
    if not is_admin(uid, gid, group):
        log.warning("admin.refused", uid=uid, path=request.path)
        raise ApiError(403, "forbidden",
                       f"{user_name(uid)} is not root, the daemon's user or in group {group}")
    request[ACTOR] = user_name(uid)
    return await handler(request)


def make_app(cfg: Config, store: Store) -> web.Application:

    body_max = cfg.limits.attachment_max * 4 // 3 + 256 * 1024  # base64 + JSON
    app = web.Application(middlewares=[errors_middleware, auth_middleware],
                          client_max_size=body_max)
    app[CONFIG_KEY] = ConfigHolder(cfg)
    app[STORE_KEY] = store
    app[TLS_MAPS_LOCK] = asyncio.Lock()
    add_routes(app)
    return app


class AdminServer:
    """The running admin listener. Shut down like an asyncio.Server:
    `server.close(); await server.wait_closed()`."""

    def __init__(self, runner: web.AppRunner, site: web.UnixSite, path: Path) -> None:
        self.runner, self.site, self.path = runner, site, path
        self._closed = False

    def is_serving(self) -> bool:
        return not self._closed

    def reload(self, cfg: Config) -> None:
        """Routes read the config per request: the next one sees `cfg`."""
        self.runner.app[CONFIG_KEY].current = cfg

    def close(self) -> None:
        """Stop accepting connections and remove the socket file."""
        if self._closed:
            return
        self._closed = True
        server: Any = getattr(self.site, "_server", None)
        if server is not None:
            server.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def wait_closed(self) -> None:
        """Finish open requests and release everything."""
        self.close()
        await self.runner.cleanup()

    async def aclose(self) -> None:
        await self.wait_closed()


async def start(cfg: Config, store: Store) -> list[AdminServer]:
    """Bind the admin socket (mode cfg.admin.socket_mode, group cfg.admin.group when that group
    exists) and serve. The daemon must call `close()` then `await wait_closed()` on shutdown."""
    path = cfg.admin_socket
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_socket(path, "admin socket")
    runner = web.AppRunner(make_app(cfg, store), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    try:
        await site.start()
        os.chmod(path, cfg.admin.socket_mode)
        try:
            gid = grp.getgrnam(cfg.admin.group).gr_gid if cfg.admin.group else None
        except KeyError:
            gid = None
        if gid is not None:
            with contextlib.suppress(PermissionError):
                os.chown(path, -1, gid)
    except BaseException:
        await runner.cleanup()
        raise
    log.info("admin.listening", socket=str(path), mode=oct(cfg.admin.socket_mode),
             group=cfg.admin.group if gid is not None else None)
    return [AdminServer(runner, site, path)]
