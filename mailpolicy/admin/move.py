"""`mailbox move`: copy a mailbox to another node with Dovecot's `doveadm backup` (what it is
made for), defer its deliveries (4xx) only for the final switch, flip its home, and remove
the old copy. Runs on the mailbox's home node (where the Maildir and doveadm are)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from mailpolicy.config import Config
from mailpolicy.core.model import Mailbox, NodeState
from mailpolicy.maildir import mailbox as files
from mailpolicy.store import Store

log = structlog.get_logger("mailpolicy.admin")

MOVE_GRACE = 2.0  # seconds between "moving" and the last copy: every node hears of it within
# 1 s (LISTEN/NOTIFY) and a delivery already past RCPT finishes its write
DOVEADM_TIMEOUT = 3600.0
RETRY_DELAY = 1.0
FIRST_PASS_ATTEMPTS = 3


class MoveError(Exception):
    """The move did not happen; `status` is the admin API's HTTP status."""

    def __init__(self, message: str, status: int = 409, field: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.field = message, status, field


async def doveadm_backup(cfg: Config, address: str, host: str) -> None:
    """`doveadm backup -u ADDRESS tcp:HOST:PORT`: make the copy on HOST identical to ours."""
    cmd = [*cfg.cluster.doveadm_command, "backup", "-u", address,
           f"tcp:{host}:{cfg.cluster.doveadm_port}"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise MoveError(f"cannot run {cmd[0]}: {e.strerror or e}", 503) from None
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), DOVEADM_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        text = err.decode("utf-8", "replace").strip()[-500:]
        raise MoveError(f"doveadm backup to {host} failed ({proc.returncode}): {text}", 503)


async def move(cfg: Config, store: Store, mailbox: Mailbox, to: str, *, actor: str = "admin",
               grace: float = MOVE_GRACE) -> dict[str, Any]:
    """Move `mailbox` from this node to node `to`; nothing changes when it fails."""
    here = cfg.cluster.node
    if not here or not cfg.cluster.doveadm_port:
        raise MoveError("mailbox move needs cluster.node and cluster.doveadm_port", 409,
                        "to")
    if mailbox.home_node != here:
        raise MoveError(f"{mailbox.address} lives on node {mailbox.home_node or '(none)'}: "
                        f"run the move there", 409, "address")
    if to == here:
        raise MoveError(f"{mailbox.address} already lives on node {to}", 409, "to")
    target = await store.nodes.get(to)
    if target is None:
        raise MoveError(f"no node {to}", 422, "to")
    if target.state is NodeState.DOWN or not target.imap_host:
        raise MoveError(f"node {to} is down or has no Dovecot address (node edit --imap)",
                        409, "to")
    started = time.monotonic()
    for attempt in range(1, FIRST_PASS_ATTEMPTS + 1):  # the bulk, while mail still flows
        try:
            await doveadm_backup(cfg, mailbox.address, target.imap_host)
            break
        except MoveError as e:  # nothing has changed yet: try again (a Dovecot finds its SQL
            if attempt == FIRST_PASS_ATTEMPTS:  # connection broken on its first query)
                raise
            log.warning("mailbox.move_retry", mailbox=mailbox.address, error=e.message)
            await asyncio.sleep(RETRY_DELAY)
    switch = time.monotonic()
    await store.nodes.begin_move(mailbox.id, to, mailbox.address, actor=actor)
    try:
        await asyncio.sleep(grace)
        await doveadm_backup(cfg, mailbox.address, target.imap_host)  # what came meanwhile
        await store.nodes.finish_move(mailbox.id, to, mailbox.address, actor=actor)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(store.nodes.abort_move(mailbox.id, mailbox.address,
                                                       actor=actor))
        raise
    deferred = time.monotonic() - switch
    home = files.mailbox_home(cfg.maildir_root, mailbox.domain, mailbox.name)
    aside = await asyncio.to_thread(files.set_aside, home)
    await asyncio.to_thread(files.remove, aside)
    log.info("mailbox.moved", mailbox=mailbox.address, to=to, deferred_seconds=deferred,
             seconds=time.monotonic() - started)
    return {"moved": mailbox.address, "from": here, "to": to,
            "deferred_seconds": round(deferred, 3),
            "seconds": round(time.monotonic() - started, 3)}
