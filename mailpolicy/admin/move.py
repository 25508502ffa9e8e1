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
KICK_TIMEOUT = 30.0
KICK_NONE_CONNECTED = 68  # doveadm's DOVEADM_EX_NOTFOUND: "no users kicked"


class MoveError(Exception):
    """The move did not happen; `status` is the admin API's HTTP status."""

    def __init__(self, message: str, status: int = 409, field: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.field = message, status, field


async def _doveadm(cfg: Config, *args: str, seconds: float) -> tuple[int, str]:
    """Run this node's doveadm with `args`: (exit status, stdout and stderr)."""
    cmd = [*cfg.cluster.doveadm_command, *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        raise MoveError(f"cannot run {cmd[0]}: {e.strerror or e}", 503) from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace").strip()[-500:]


async def doveadm_backup(cfg: Config, address: str, host: str) -> None:
    """`doveadm backup -u ADDRESS tcp:HOST:PORT`: make the copy on HOST identical to ours."""
    status, text = await _doveadm(cfg, "backup", "-u", address,
                                  f"tcp:{host}:{cfg.cluster.doveadm_port}",
                                  seconds=DOVEADM_TIMEOUT)
    if status != 0:
        raise MoveError(f"doveadm backup to {host} failed ({status}): {text}", 503)


async def doveadm_kick(cfg: Config, address: str) -> bool:
    """`doveadm kick ADDRESS` on this node: end the user's IMAP/POP3 sessions here (sessions
    proxied from other nodes end with them), so clients log in again and are sent to the home
    node the passdb names now. True when it ran; a failure is logged, never fatal (the mail
    itself is safe: only a session left open keeps showing the old copy)."""
    try:
        status, text = await _doveadm(cfg, "kick", address, seconds=KICK_TIMEOUT)
    except (MoveError, TimeoutError) as e:
        status, text = -1, getattr(e, "message", "timed out")
    if status not in (0, KICK_NONE_CONNECTED):
        log.warning("mailbox.kick_failed", mailbox=address, status=status, error=text)
        return False
    return True


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
        first = await doveadm_kick(cfg, mailbox.address)  # no session writes to the last copy
        await doveadm_backup(cfg, mailbox.address, target.imap_host)  # what came meanwhile
        await store.nodes.finish_move(mailbox.id, to, mailbox.address, actor=actor)
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(store.nodes.abort_move(mailbox.id, mailbox.address,
                                                       actor=actor))
        raise
    deferred = time.monotonic() - switch
    # the switch: a session opened meanwhile still sees the old copy; its client logs in
    # again, through the proxy, on the new home
    kicked = await doveadm_kick(cfg, mailbox.address) and first
    home = files.mailbox_home(cfg.maildir_root, mailbox.domain, mailbox.name)
    aside = await asyncio.to_thread(files.set_aside, home)
    await asyncio.to_thread(files.remove, aside)
    log.info("mailbox.moved", mailbox=mailbox.address, to=to, deferred_seconds=deferred,
             seconds=time.monotonic() - started)
    return {"moved": mailbox.address, "from": here, "to": to,
            "deferred_seconds": round(deferred, 3), "sessions_kicked": kicked,
            "seconds": round(time.monotonic() - started, 3)}
