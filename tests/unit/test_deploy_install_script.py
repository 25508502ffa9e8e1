"""scripts/install-system-deps.sh: silent when nothing is missing, harmless without root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh"
PACKAGES = ("postfix", "dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "dovecot-sqlite",
            "dovecot-pgsql", "sqlite3", "postgresql", "knot")


def installed(pkg: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                         text=True)
    return "install ok installed" in res.stdout


def test_script_is_valid_posix_sh() -> None:
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.skipif(shutil.which("dpkg-query") is None or not all(map(installed, PACKAGES)),
                    reason="needs the packages installed (this is the idempotence check)")
def test_nothing_missing_means_no_output_and_no_change() -> None:
    res = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg-query") is None,
                    reason="needs root to run the script as an unprivileged user")
def test_without_root_it_names_what_is_missing_and_installs_nothing(tmp_path: Path) -> None:
    # run a world-readable copy: the checkout may lie where nobody cannot enter (/root, a
    # mktemp -d), and pytest's tmp_path too
    base = Path(tempfile.mkdtemp(prefix="mp-install-script-"))
    try:
        base.chmod(0o755)
        script = base / SCRIPT.name
        shutil.copy(SCRIPT, script)
        script.chmod(0o755)
        env = {**os.environ, "MAILPOLICY_SYSTEM_PACKAGES": "sqlite3 mailpolicy-no-such-package"}
        res = subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                             env=env, user="nobody", group="nogroup", extra_groups=[], cwd="/")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert res.returncode == 0
    assert "missing: mailpolicy-no-such-package" in res.stderr
    assert "sudo" in res.stderr
