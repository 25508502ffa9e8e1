"""A service on every core: worker processes sharing its TCP port (SO_REUSEPORT), supervised.

Used for the hot services, LMTP (`limits.lmtp_workers`) and the policy service
(`limits.policy_workers`). A count of 1 serves in the daemon's own event loop; N > 1 (0 = one
per CPU core) starts N processes `python -P -m mailpolicy.runtime.workers SERVICE`, each with
its own event loop, Store and caches, each calling the service's `Pool.start(cfg, store,
reuse_port=True, inherited=sock)` (the kernel spreads connections over them). A pool may have
`bind_inherited(cfg) -> socket | None`: a listener bound once here whose descriptor every
worker inherits and accepts from (LMTP's Unix socket).

The config reaches a worker as one JSON line on its stdin; the pipe then stays open and its
end (the daemon died, even by SIGKILL) stops the worker, as does PR_SET_PDEATHSIG on Linux.
SIGTERM/SIGINT stop a worker the way the daemon stops its own listeners; workers run in their
own process group, so a terminal's Ctrl-C reaches the daemon only, which stops them in order. A
worker that exits unexpectedly is started again (after 0.2 s, doubling up to 10 s while it
keeps failing fast).

Cross-process staleness: the caches of a worker (directory answers, active autoresponders)
are cleared at once by store writes made in that worker only; writes made elsewhere (admin
API, CLI, another worker) are seen within 0.1 s on SQLite (the store's directory generation
is watched; claims, tokens and audit lines do not move it) and within about 1 s on PostgreSQL
(LISTEN/NOTIFY on the generation, polled every second as a fallback: store/changes.py).
Quota state is the shared `maildirsize` file, so it is never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

from mailpolicy.config import Config
from mailpolicy.runtime.service import Listener, Pool, Service
from mailpolicy.store import Store

log = structlog.get_logger("mailpolicy.workers")

READY = b"READY"
START_TIMEOUT = 60.0  # seconds a new worker may take to import, open the store and bind
STOP_TIMEOUT = 8.0  # seconds a worker may take to finish its sessions on SIGTERM
RESTART_MIN = 0.2
RESTART_MAX = 10.0
HEALTHY_AFTER = 10.0  # a worker that ran this long resets the restart back-off
PR_SET_PDEATHSIG = 1
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)
PKG_ROOT = str(Path(__file__).resolve().parents[2])  # on the workers' PYTHONPATH


def worker_count(n: int) -> int:
    """The number of processes a `*_workers` setting asks for (0 = one per CPU core)."""
    return n if n > 0 else max(1, os.cpu_count() or 1)


def settle_gc() -> None:
    """For a long-lived service process, once it serves: what start-up made (modules, config,
    compiled templates) moves to the permanent generation and is never scanned again, and
    young collections run less often (the per-request garbage is short-lived; the caches
    are not)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def start(cfg: Config, store: Store, service: Service) -> list[Listener]:
    """Serve `service`: in the daemon's loop when it is not pooled or its `workers` setting
    asks for one process, else as a supervised pool of worker processes."""
    n = worker_count(service.pool.workers(cfg.limits)) if service.pool is not None else 1
    if service.pool is None or n <= 1:
        return list(await service.start(cfg, store))
    pool = WorkerPool(cfg, n, service.name, service.pool)
    await pool.start()
    return [pool]


def config_line(cfg: Config, **extra: Any) -> bytes:
    """The JSON line that gives a worker its config (at start, and at each reload)."""
    data = msgspec.to_builtins(cfg, enc_hook=int)  # Size is an int
    base_dir = data.pop("base_dir", "")
    return json.dumps({"config": data, "base_dir": base_dir, **extra}).encode() + b"\n"


def apply_config(cfg: Config, servers: list[Any]) -> None:
    """Apply a reloaded config in this process: the log set-up, then every service that can
    take it (`reload(cfg)`) without closing anything."""
    from mailpolicy.runtime import logs

    logs.setup(cfg)
    for server in servers:
        reload = getattr(server, "reload", None)
        if reload is not None:
            reload(cfg)


class WorkerPool:
    """N supervised worker processes; close() + wait_closed() stop them (as for a server)."""

    def __init__(self, cfg: Config, n: int, name: str, pool: Pool) -> None:
        self.cfg = cfg
        self.n = n
        self.pool = pool
        self.name = name  # the service's: argv of a worker, and log events (lmtp.worker_exited)
        self.procs: list[asyncio.subprocess.Process | None] = [None] * n
        self.supervisors: list[asyncio.Task[None]] = []
        self.inherited: socket.socket | None = None
        self.closing = False
        self.restarts = 0

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None and p.returncode is None]

    async def start(self) -> None:
        if self.pool.bind_inherited is not None:
            self.inherited = self.pool.bind_inherited(self.cfg)
        try:
            results = await asyncio.gather(*(self._spawn(i) for i in range(self.n)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            for i, r in enumerate(results):
                if not isinstance(r, BaseException):
                    self.procs[i] = r
            if errors:
                raise errors[0]
        except BaseException:
            self.close()
            await self.wait_closed()
            raise
        self.supervisors = [asyncio.create_task(self._supervise(i)) for i in range(self.n)]
        log.info(f"{self.name}.workers_started", workers=self.n, pids=self.pids())

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        """Start worker `index` and wait until it serves; OSError when it does not."""
        fd = self.inherited.fileno() if self.inherited is not None else None
        cfg = self.cfg
        line = config_line(cfg, index=index, inherited_fd=fd, parent=os.getpid())
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # only the daemon talks to systemd
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (PKG_ROOT, env.get("PYTHONPATH"))))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "mailpolicy.runtime.workers", self.name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            pass_fds=(fd,) if fd is not None else (), env=env,
            process_group=0)  # their own group: see the module doc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(line)
            await proc.stdin.drain()
            first = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except (OSError, TimeoutError):
            first = b""
        except BaseException:  # cancelled (the pool closes): do not leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        if first.strip() != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            status = await proc.wait()
            raise OSError(f"{self.name} worker {index} did not start (exit status {status}; "
                          f"see its log lines above)")
        if self.cfg is not cfg:  # a reload came while it started
            proc.stdin.write(config_line(self.cfg))
        return proc

    async def _supervise(self, index: int) -> None:
        """Restart worker `index` whenever it exits while the pool is not closing."""
        delay = RESTART_MIN
        started = time.monotonic()
        while not self.closing:
            proc = self.procs[index]
            if proc is not None:
                status = await proc.wait()
                if self.closing:
                    return
                log.warning(f"{self.name}.worker_exited", worker=index, pid=proc.pid, status=status)
                if time.monotonic() - started >= HEALTHY_AFTER:
                    delay = RESTART_MIN
                self.procs[index] = None
            await asyncio.sleep(delay)
            delay = min(RESTART_MAX, delay * 2)
            if self.closing:
                return
            try:
                self.procs[index] = new = await self._spawn(index)
            except OSError as e:
                log.error(f"{self.name}.worker_restart_failed", worker=index, error=str(e))
                continue
            started = time.monotonic()
            self.restarts += 1
            log.info(f"{self.name}.worker_restarted", worker=index, pid=new.pid)

    def reload(self, cfg: Config) -> None:
        """Send `cfg` to every worker (a line on its stdin; it applies it without closing a
        connection); workers started later get it too."""
        self.cfg = cfg
        line = config_line(cfg)
        for proc in self.procs:
            if proc is None or proc.returncode is not None or proc.stdin is None:
                continue
            try:
                proc.stdin.write(line)
            except (OSError, RuntimeError) as e:  # it is exiting: its successor gets self.cfg
                log.warning(f"{self.name}.worker_reload_failed", pid=proc.pid, error=repr(e))

    def close(self) -> None:
        """Ask every worker to stop (SIGTERM, and its stdin closes)."""
        self.closing = True
        for proc in self.procs:
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            if proc.stdin is not None:
                proc.stdin.close()

    async def wait_closed(self) -> None:
        """Wait for the workers to exit (SIGKILL after STOP_TIMEOUT); release the socket."""
        for task in self.supervisors:
            task.cancel()  # a restart in progress kills its new worker
        await asyncio.gather(*self.supervisors, return_exceptions=True)
        procs = [p for p in self.procs if p is not None]
        try:
            if procs:
                _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs],
                                                timeout=STOP_TIMEOUT)
                if pending:
                    log.warning(f"{self.name}.worker_stop_timeout", pids=self.pids())
                    for p in procs:
                        if p.returncode is None:
                            with contextlib.suppress(ProcessLookupError):
                                p.kill()
                    await asyncio.wait(pending)
        finally:
            if self.inherited is not None:
                self.inherited.close()
                self.inherited = None


# ---- the worker process ----

def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the daemon dies (Linux); exit if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(1)


async def _serve(cfg: Config, service: Service, pool: Pool, inherited_fd: int | None) -> None:
    from mailpolicy import config as config_mod
    from mailpolicy.core import outbound
    from mailpolicy.runtime import logs

    logs.setup(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon handles reloads

    servers: list[Any] = []
    pending = bytearray()  # a config line (a reload) not read whole yet

    def stdin_ready() -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the daemon closed the pipe or died
            loop.remove_reader(0)
            stop.set()
            return
        pending.extend(data)
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end])
            del pending[:end + 1]
            try:
                msg = json.loads(line)
                new = config_mod.from_dict(msg["config"], base_dir=msg["base_dir"])
                apply_config(new, servers)
            except Exception as e:  # never fatal: the worker keeps its config
                log.error("worker.reload_failed", service=service.name, error=repr(e))
                continue
            log.info("worker.reloaded", service=service.name, pid=os.getpid())

    os.set_blocking(0, False)
    loop.add_reader(0, stdin_ready)
    store = await Store.open(cfg.store_url, ip_pool=outbound.pool(cfg),
                             busy_timeout_ms=cfg.store.busy_timeout_ms,
                             postmaster=cfg.admin.postmaster,
                             min_password=cfg.admin.min_password_length)
    try:
        inherited = socket.socket(fileno=inherited_fd) if inherited_fd is not None else None
        servers.extend(await pool.start(cfg, store, reuse_port=True, inherited=inherited))
        settle_gc()
        os.write(1, READY + b"\n")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # nobody reads our stdout any more
        os.close(devnull)
        await stop.wait()
    finally:
        for s in servers:
            s.close()
        if servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in servers)),
                                       STOP_TIMEOUT - 1)
        await store.close()


def main() -> int:
    """Entry point of one worker (argv: the service): the JSON config line on stdin, READY on
    stdout."""
    from mailpolicy import config as config_mod
    from mailpolicy.services import by_name

    service = by_name(sys.argv[1])
    if service.pool is None:
        print(f"mailpolicy: {service.name} does not run in worker processes", file=sys.stderr)
        return 2

    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 65536)  # the daemon writes this one line, then nothing
        if not chunk:
            return 2
        line += chunk
    msg = json.loads(line)
    _die_with_parent(int(msg["parent"]))
    cfg = config_mod.from_dict(msg["config"], base_dir=msg["base_dir"])
    try:
        asyncio.run(_serve(cfg, service, service.pool, msg["inherited_fd"]))
    except OSError as e:
        print(f"mailpolicy {service.name} worker {msg['index']}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
