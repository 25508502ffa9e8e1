"""Composition root: open the store, start every listener, handle signals, notify systemd."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog

from mailpolicy import config as config_mod
from mailpolicy.core import outbound
from mailpolicy.core.srs import srs_domain, unqualified_default
from mailpolicy.deploy import tlsmaps
from mailpolicy.runtime import heartbeat, housekeeping, logs, sdnotify, statedir, workers
from mailpolicy.runtime import reload as reload_mod
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
    """Run every service until SIGTERM/SIGINT. SIGHUP re-reads the config file, applies what
    it can in place and reports what needs a restart (listeners stay bound)."""
    statedir.ensure_dir(cfg.state_dir, "state directory (paths.state_dir)")
    lock = statedir.StateLock(cfg.state_dir)
    lock.acquire()  # before anything is bound or replaced: one daemon per state directory
    try:
        statedir.ensure_dir(cfg.maildir_root, "Maildir root (paths.maildir_root)")
        statedir.ensure_dir(cfg.admin_socket.parent, "admin socket directory (paths.admin_socket)",
                            group=cfg.admin.group)
        await _serve_locked(cfg, config_path, ready)
    finally:
        lock.release()


async def _serve_locked(cfg: config_mod.Config, config_path: str | None,
                        ready: asyncio.Event | None) -> None:
    store = await Store.open(cfg.store_url, ip_pool=outbound.pool(cfg),
                             busy_timeout_ms=cfg.store.busy_timeout_ms,
                             postmaster=cfg.admin.postmaster,
                             min_password=cfg.admin.min_password_length)
    await tlsmaps.write_tls_maps(cfg, await store.list_domains())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    servers: list[Listener] = []
    chores: list[asyncio.Task[None]] = []  # periodic housekeeping, cancelled at stop

    running = [cfg]  # the config in force (a reload replaces it)
    reload_lock = asyncio.Lock()

    async def _apply_reload() -> None:
        async with reload_lock:
            sdnotify.notify("RELOADING=1")
            try:
                await _reload(running, config_path, servers, store)
            except Exception as e:  # a reload never stops the daemon
                log.error("reload.failed", error=repr(e))
            sdnotify.notify("READY=1")

    def _on_sighup() -> None:
        chores[:] = [t for t in chores if not t.done()]
        chores.append(asyncio.ensure_future(_apply_reload()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _on_sighup)
    try:
        for service in SERVICES:
            servers.extend(await workers.start(running[0], store, service))
            log.info("service.started", service=service.name)
        if cfg.cluster.node:  # a node of a cluster: in the registry while it serves
            await heartbeat.register(cfg, store)
            chores.append(asyncio.create_task(heartbeat.beat(cfg, store)))
        workers.settle_gc()
        chores.append(asyncio.create_task(housekeeping.sweep_tmp(cfg.maildir_root)))
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
        for task in chores:
            task.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        for s in reversed(servers):
            await _close(s)
        await store.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _reload(running: list[config_mod.Config], config_path: str | None,
                  servers: list[Listener], store: Store) -> None:
    """SIGHUP: read the config file again and apply, in this process and in every worker,
    every changed key that does not need a restart (listeners stay bound, no connection is
    closed); log which changed keys need a restart."""
    try:
        new = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        log.error("reload.bad_config", error=str(e))
        return
    change = reload_mod.plan(running[0], new)
    if not change.applied and not change.needs_restart:
        log.info("reload.unchanged")
        return
    if change.applied:
        workers.apply_config(change.effective, servers)
        running[0] = change.effective
        await tlsmaps.write_tls_maps(change.effective, await store.list_domains())
        log.info("reload.applied", keys=",".join(change.applied))
    if change.needs_restart:
        log.warning("reload.needs_restart", keys=",".join(change.needs_restart),
                    reason="these keys apply at the next restart")


def run(config_path: str | None = None) -> int:
    """`mailpolicy serve`: load the config and run until stopped; exit status."""
    try:
        cfg = config_mod.load(config_path)
        srs_domain(cfg)  # refused at start, naming the key, when not fully qualified
    except config_mod.ConfigError as e:
        print(f"mailpolicy: config error: {e}", file=sys.stderr)
        return 2
    logs.setup(cfg)
    if (warning := unqualified_default(cfg)) is not None:
        log.warning("srs.domain_unqualified", reason=warning)
    try:
        asyncio.run(serve(cfg, config_path))
    except statedir.StartupError as e:
        log.error("daemon.failed", error=e.strerror)
        print(f"mailpolicy: {e.strerror}", file=sys.stderr)
        return 1
    except OSError as e:
        log.error("daemon.failed", error=str(e))
        return 1
    return 0
