"""Postfix's own postconf accepts the postfix-config fragments appended to Debian's stock files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailpolicy import config
from mailpolicy.deploy import postfix as postfixconf

POSTCONF = "/usr/sbin/postconf"
STOCK_MASTER = Path("/usr/share/postfix/master.cf.dist")

pytestmark = pytest.mark.skipif(
    not os.access(POSTCONF, os.X_OK) or not STOCK_MASTER.exists(),
    reason="needs Postfix: apt-get install postfix (or scripts/install-system-deps.sh)")


def postconf(conf_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([POSTCONF, "-c", str(conf_dir), *args], capture_output=True,
                          text=True, timeout=30)


def write_instance(tmp_path: Path, cfg: config.Config, pool: tuple[str, ...]) -> Path:
    """Stock master.cf + our entries; a minimal main.cf + our lines (as the README says)."""
    data = postfixconf.main_cf(cfg, pool)
    main = "compatibility_level = 3.6\nmyhostname = mx.example.test\nmydestination =\n" + "".join(
        f"{k} = {v}\n" for k, v in data.items())
    (tmp_path / "main.cf").write_text(main)
    master = STOCK_MASTER.read_text() + "\n".join(postfixconf.master_cf(cfg, pool)) + "\n"
    (tmp_path / "master.cf").write_text(master)
    return tmp_path


@pytest.mark.parametrize("mode", ["after-queue", "before-queue"])
def test_postconf_n_accepts_the_fragments_without_warnings(tmp_path: Path, mode: str) -> None:
    cfg = config.from_dict({"filter": {"mode": mode}})
    conf = write_instance(tmp_path, cfg, ("127.0.0.1", "2001:db8::25"))
    res = postconf(conf, "-n")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    for key, value in postfixconf.main_cf(cfg, ()).items():
        assert f"{key} = {value}" in res.stdout.splitlines()


def test_postconf_reads_back_every_master_entry_and_option(tmp_path: Path) -> None:
    cfg = config.from_dict({})
    pool = ("127.0.0.1",)
    conf = write_instance(tmp_path, cfg, pool)
    res = postconf(conf, "-P")  # every -o override, as service/type/name = value
    assert res.returncode == 0 and res.stderr == "", res.stderr
    lines = set(res.stdout.splitlines())
    for entry in postfixconf.master_cf(cfg, pool):
        service, kind = entry.split()[:2]
        for opt in entry.splitlines()[1:]:
            name, _, value = opt.strip()[len("-o "):].partition("=")
            assert f"{service}/{kind}/{name} = {value}".rstrip() in {ln.rstrip() for ln in lines}
