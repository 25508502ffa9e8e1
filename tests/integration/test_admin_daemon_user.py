"""The user the daemon runs as may use its own admin socket: `make run` as an unprivileged
user followed by the README's `mailpolicy ...` commands (same user) must not get 403."""

from __future__ import annotations

import os
import pwd

import pytest
from test_admin_support import admin_server, needs_root, raw_call_as

from mailpolicy.admin.server import is_admin


def test_is_admin_accepts_the_daemons_own_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 4321)
    assert is_admin(4321, 4321, "")
    assert is_admin(4321, 4321, "no-such-group-here")
    assert not is_admin(4322, 4322, "")
    assert is_admin(0, 0, "")


@needs_root
async def test_daemon_user_is_allowed_over_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    async with admin_server(admin={"group": ""}) as env:
        os.chmod(env.socket, 0o666)
        res = await raw_call_as("nobody", "nogroup", env.socket, "GET", "/v1/domains")
        assert res["status"] == 403 and "the daemon's user" in res["body"]["message"], res
        monkeypatch.setattr(os, "getuid", lambda: nobody)  # as if the daemon ran as nobody
        res = await raw_call_as("nobody", "nogroup", env.socket, "POST", "/v1/domains",
                                {"name": "own.example"})
        assert res["status"] == 201, res
        rows = await env.store.list_audit(limit=2)  # domain.create, then its DKIM key
        assert ("nobody", "domain.create") in [(r["actor"], r["action"]) for r in rows]
