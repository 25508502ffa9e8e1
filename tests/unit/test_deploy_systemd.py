"""systemd/mailpolicy.service: Type=notify, hardened, and accepted by `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "mailpolicy.service"
EXEC = "/opt/mailpolicy/bin/mailpolicy"


def unit_directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def directives() -> dict[str, list[str]]:
    return unit_directives(UNIT)


def test_unit_is_notify_type_with_reload_by_sighup() -> None:
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["ExecStart"][0].startswith(f"{EXEC} serve -c ")
    # the daemon stops its workers itself (drained, not restarted): SIGTERM to it alone
    assert d["KillMode"] == ["mixed"]


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


TLS_PATH = UNIT.with_name("mailpolicy-tls-reload.path")
TLS_SERVICE = UNIT.with_name("mailpolicy-tls-reload.service")


def test_tls_reload_path_watches_the_map_written_last_in_the_daemons_state_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailpolicy import config
    from mailpolicy.deploy import tlsmaps

    state_dir = "/var/lib/" + directives()["StateDirectory"][0]
    assert unit_directives(TLS_PATH)["PathChanged"] == [f"{state_dir}/{tlsmaps.DOVECOT_MAP}"]
    assert unit_directives(TLS_PATH)["Unit"] == [TLS_SERVICE.name]
    # the daemon writes both maps, the watched one last: when it changes, both are in place
    written: list[str] = []
    real = tlsmaps.write_atomic
    monkeypatch.setattr(tlsmaps, "write_atomic",
                        lambda path, text: (written.append(path.name), real(path, text)))
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)}})
    tlsmaps._write(cfg, [])
    assert written == [tlsmaps.POSTFIX_MAP, tlsmaps.DOVECOT_MAP]


def test_tls_reload_service_reloads_postfix_and_dovecot_as_root() -> None:
    d = unit_directives(TLS_SERVICE)
    assert d["Type"] == ["oneshot"] and "User" not in d
    assert d["ExecStart"] == ["-/usr/sbin/postfix reload", "-/usr/bin/doveadm reload"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_tls_reload_units(tmp_path: Path) -> None:
    for unit in (TLS_PATH, TLS_SERVICE):
        (tmp_path / unit.name).write_text(unit.read_text())
    res = subprocess.run(["systemd-analyze", "verify", str(tmp_path / TLS_PATH.name),
                          str(tmp_path / TLS_SERVICE.name)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    problems = [ln for ln in (res.stdout + res.stderr).splitlines()
                if "mailpolicy-tls-reload" in ln]
    assert res.returncode == 0 and problems == [], res.stdout + res.stderr
