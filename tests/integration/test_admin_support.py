"""Shared set-up for the admin API and CLI tests: a real admin server on a temp Unix socket
with a real SQLite store (no tests here)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailpolicy import admin, config
from mailpolicy.store import Store

IP_POOL = ["127.0.0.1", "127.0.0.2"]
RUN_TIMEOUT = 30.0  # seconds for one CLI/client subprocess
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mailpolicy.cli"]  # the real `mailpolicy` command
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to run a client as another uid")


@dataclass
class AdminEnv:
    cfg: config.Config
    store: Store
    server: admin.AdminServer
    session: aiohttp.ClientSession
    tmp: Path

    @property
    def socket(self) -> str:
        return str(self.cfg.admin_socket)

    async def call(self, method: str, path: str, body: Any = None, *,
                   raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        async with self.session.request(method, "http://mailpolicy" + path, data=data) as r:
            text = await r.read()
            return r.status, json.loads(text) if text else None

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, res = await self.call(method, path, body)
        assert status < 300, (status, res)
        return res

    async def snapshot(self) -> tuple[Any, ...]:
        """Everything the admin API can change, to prove a refusal changed nothing."""
        boxes = await self.store.list_mailboxes()
        ars = [await self.store.autoreplies.get(m.id) for m in boxes]
        audit = await self.store.list_audit(limit=100000)
        # `maildirsize` is the quota accounting cache (rewritten on reading usage)
        files = sorted(str(p.relative_to(self.cfg.maildir_root))
                       for p in self.cfg.maildir_root.rglob("*")
                       if p.name != "maildirsize") if (
            self.cfg.maildir_root.exists()) else []
        return (await self.store.list_domains(), boxes, ars, len(audit), files)

    def maildir(self, address: str) -> Path:
        from mailpolicy.maildir.mailbox import maildir_for

        name, domain = address.split("@")
        return maildir_for(self.cfg.maildir_root, domain, name)

    def deliver(self, address: str, size: int, folder: str = "", sub: str = "new") -> Path:
        """Put a message file of `size` bytes into a mailbox folder (Maildir++ ,S= name)."""
        d = self.maildir(address) / folder / sub
        d.mkdir(parents=True, exist_ok=True)
        for f in ("cur", "new", "tmp"):
            (self.maildir(address) / folder / f).mkdir(parents=True, exist_ok=True)
        p = d / f"{os.urandom(6).hex()}.test,S={size}:2," if sub == "cur" else (
            d / f"{os.urandom(6).hex()}.test,S={size}")
        p.write_bytes(b"x" * size)
        return p


def make_config(tmp: Path, **extra: Any) -> config.Config:
    data: dict[str, Any] = {"paths": {"state_dir": str(tmp)},
                            "outbound": {"ip_pool": IP_POOL},
                            "admin": {"group": "mailpolicy-test-nogroup"}}
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    return config.from_dict(data, base_dir=str(tmp))


@contextlib.asynccontextmanager
async def admin_server(**extra: Any) -> AsyncIterator[AdminEnv]:
    """A running admin server with a fresh store; the directory is world-traversable so that
    tests can run a client as another uid. Keyword arguments add config sections."""
    tmp = Path(tempfile.mkdtemp(prefix="mp-admin-"))
    os.chmod(tmp, 0o755)
    cfg = make_config(tmp, **extra)
    store = await Store.open(cfg.store_url, ip_pool=cfg.outbound.ip_pool,
                             postmaster=cfg.admin.postmaster,
                             min_password=cfg.admin.min_password_length)
    [server] = await admin.start(cfg, store)
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(cfg.admin_socket)))
    try:
        yield AdminEnv(cfg, store, server, session, tmp)
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
        await store.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def run_as(user: str, group: str, argv: list[str], *, stdin: bytes = b"",
                 env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a command as another uid/gid (no supplementary groups) via setpriv."""
    cmd = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", *argv]
    return await run(cmd, stdin=stdin, env=env)


def cli_as(user: str, group: str) -> tuple[list[str], dict[str, str]]:
    """The `mailpolicy` command as `user` can run it wherever the checkout lies (under /root,
    in a mktemp -d): the e2e harness's choice of interpreter, a world-readable copy of the
    package when needed."""
    import grp
    import pwd

    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    try:
        from harness_mailpolicy import CLI as CLI_CODE
        from harness_mailpolicy import interpreter_for
    finally:
        sys.path.remove(str(ROOT / "tests" / "e2e"))
    python, env = interpreter_for(pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    return [python, "-c", CLI_CODE], env


async def run(argv: list[str], *, stdin: bytes = b"", env: dict[str, str] | None = None,
              cwd: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd or "/")
    out, err = await asyncio.wait_for(proc.communicate(stdin), RUN_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# a stdlib-only HTTP client over a Unix socket, for running as another uid
RAW_CLIENT = """
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
c = C("mailpolicy", timeout=10)
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
try:
    c.request(sys.argv[2], sys.argv[3], body=body)
except PermissionError:
    print(json.dumps({"status": "EACCES"})); sys.exit(0)
r = c.getresponse()
print(json.dumps({"status": r.status, "body": json.loads(r.read() or b"null")}))
"""


async def raw_call_as(user: str, group: str, socket_path: str, method: str, path: str,
                      body: Any = None) -> dict[str, Any]:
    argv = [sys.executable, "-I", "-c", RAW_CLIENT, socket_path, method, path]
    if body is not None:
        argv.append(json.dumps(body))
    rc, out, err = await run_as(user, group, argv)
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(name="env")
async def cli_env() -> AsyncIterator[AdminEnv]:
    """`env`: an admin server for tests of the CLI verbs (import `cli_env` into the module)."""
    async with admin_server() as e:
        yield e


async def cli(env: AdminEnv, *args: str) -> tuple[int, str, str]:
    """The real `mailpolicy` command against `env`'s admin socket: (status, stdout, stderr)."""
    return await run([*CLI, "--socket", env.socket, *args], env=ENV)


async def cli_ok(env: AdminEnv, *args: str) -> str:
    """`cli()` that must succeed; its stdout."""
    rc, out, err = await cli(env, *args)
    assert rc == 0, (args, out, err)
    return out
