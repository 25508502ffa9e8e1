"""systemd/mailpolicy.service: Type=notify, hardened, and accepted by `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "mailpolicy.service"
EXEC = "/opt/mailpolicy/bin/mailpolicy"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_is_notify_type_with_reload_by_sighup() -> None:
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["ExecStart"][0].startswith(f"{EXEC} serve -c ")


def test_unit_runs_as_its_own_user_with_the_hardening_the_issue_asks_for() -> None:
    d = directives()
    assert d["User"] == ["mailpolicy"] and d["Group"] == ["mailpolicy"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    writable = d["ReadWritePaths"][0].split()
    assert "/var/lib/mailpolicy" in writable and "/var/vmail" in writable


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a stand-in executable, change nothing else
    stand_in = tmp_path / "mailpolicy"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "mailpolicy.service"
    unit.write_text(UNIT.read_text().replace(EXEC, str(stand_in)))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if "mailpolicy.service" in ln]
    assert problems == [], problems
