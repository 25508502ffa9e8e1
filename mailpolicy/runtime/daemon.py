"""Composition root: open the store, start every listener, handle signals, notify systemd."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog

from mailpolicy import config as config_mod
from mailpolicy.core import outbound
from mailpolicy.deploy import tlsmaps
from mailpolicy.runtime import logs, sdnotify, workers
from mailpolicy.runtime.service import Listener
from mailpolicy.services import SERVICES
from mailpolicy.store import Store

log = structlog.get_logger("mailpolicy.daemon")


async def _close(listener: Listener) -> None:
    """Close one listener, waiting at most 10 s for its sessions."""
    listener.close()
    try:
        await asyncio.wait_for(listener.wait_closed(), 10)
    except TimeoutError:
        log.warning("listener.close_timeout")


async def serve(cfg: config_mod.Config, config_path: str | None = None,
                ready: asyncio.Event | None = None) -> None:
    """Run every service until SIGTERM/SIGINT. SIGHUP re-reads the config file and reports
    what needs a restart (listeners stay bound)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    cfg.maildir_root.mkdir(parents=True, exist_ok=True, mode=0o750)
    store = await Store.open(cfg.store_url, ip_pool=outbound.pool(cfg),
                             busy_timeout_ms=cfg.store.busy_timeout_ms,
                             postmaster=cfg.admin.postmaster,
                             min_password=cfg.admin.min_password_length)
    await tlsmaps.write_tls_maps(cfg, await store.list_domains())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    servers: list[Listener] = []

    def _reload() -> None:
        sdnotify.notify("RELOADING=1")
        try:
            new = config_mod.load(config_path)
            if new != cfg:
                log.warning("reload.needs_restart", reason="config changed; restart to apply")
            else:
                log.info("reload.unchanged")
        except config_mod.ConfigError as e:
            log.error("reload.bad_config", error=str(e))
        sdnotify.notify("READY=1")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload)
    try:
        for service in SERVICES:
            servers.extend(await workers.start(cfg, store, service))
            log.info("service.started", service=service.name)
        workers.settle_gc()
        sdnotify.notify("READY=1")
        log.info("daemon.ready", pid=os.getpid(), policy=cfg.listen.policy,
                 socketmap=cfg.listen.socketmap, filter=cfg.listen.filter, lmtp=cfg.listen.lmtp,
                 admin=str(cfg.admin_socket))
        if ready is not None:
            ready.set()
        await stop.wait()
        sdnotify.notify("STOPPING=1")
        log.info("daemon.stopping")
    finally:
        for s in reversed(servers):
            await _close(s)
        await store.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def run(config_path: str | None = None) -> int:
    """`mailpolicy serve`: load the config and run until stopped; exit status."""
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        print(f"mailpolicy: config error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg)
    try:
        asyncio.run(serve(cfg, config_path))
    except OSError as e:
        log.error("daemon.failed", error=str(e))
        return 1
    return 0
