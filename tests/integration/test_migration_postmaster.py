"""Migration 0003: domains.postmaster is added to an existing store and filled with each
domain's first mailbox (so postmaster@ and abuse@ work right after the upgrade)."""

from __future__ import annotations

import sqlite3

from mailpolicy.store import Store


async def test_0003_adds_postmaster_and_fills_the_first_mailbox(tmp_path) -> None:
    path = tmp_path / "mp.db"
    url = f"sqlite+aiosqlite:///{path}"
    store = await Store.open(url)
    await store.create_domain("a.example")
    await store.create_domain("empty.example")
    await store.create_mailbox("zed@a.example")
    await store.create_mailbox("amy@a.example")
    await store.close()
    db = sqlite3.connect(path)  # back to a 0002 store: no column, no values
    db.execute("ALTER TABLE domains DROP COLUMN postmaster")
    db.execute("UPDATE alembic_version SET version_num = '0002'")
    db.commit()
    db.close()
    store = await Store.open(url)
    try:
        a = await store.get_domain("a.example")
        empty = await store.get_domain("empty.example")
        assert a is not None and a.postmaster == "zed@a.example"  # created first
        assert empty is not None and empty.postmaster == ""
    finally:
        await store.close()
