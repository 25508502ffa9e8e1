"""Secret files are the daemon user's alone whatever the umask: the SQLite store with its
`-wal`/`-shm` (password hashes) and the SRS secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mailpolicy import config
from mailpolicy.core.srs import load_secret
from mailpolicy.store import Store


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


async def test_the_store_and_its_wal_and_shm_are_0600_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = tmp_path / "state" / "mailpolicy.db"
        store = await Store.open(f"sqlite+aiosqlite:///{db}")
        try:
            await store.create_domain("example.com")
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(p.exists() for p in files)
            assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        finally:
            await store.close()
        # an existing store left readable by an older version is made private at open
        for p in files:
            if p.exists():
                os.chmod(p, 0o644)
        store = await Store.open(f"sqlite+aiosqlite:///{db}")
        try:
            await store.list_domains()
            assert all(_mode(p) == 0o600 for p in files if p.exists())
        finally:
            await store.close()
    finally:
        os.umask(old)


def test_the_srs_secret_is_0600_under_any_umask(tmp_path: Path) -> None:
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)}}, base_dir=str(tmp_path))
    old = os.umask(0)
    try:
        secret = load_secret(cfg)
    finally:
        os.umask(old)
    path = tmp_path / "srs.secret"
    assert _mode(path) == 0o600
    os.chmod(path, 0o644)
    assert load_secret(cfg) == secret and _mode(path) == 0o600
