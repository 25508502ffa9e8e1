"""The in-memory directory (store/snapshot.py) answers resolve() exactly as the SQL store does,
follows writes of other processes within the generation poll (at once for a name it did not
know), and never asks SQLite for a lookup."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpolicy.core.cache import CachedDirectory
from mailpolicy.core.directory import Kind, resolve
from mailpolicy.store import Store, StoreError
from mailpolicy.store import snapshot as snapshot_mod
from mailpolicy.store.snapshot import POLL_INTERVAL, DirectorySnapshot

DOMAINS = ("one.test", "two.test", "xn--bcher-kva.test")
NAMES = ("a", "b", "info", "sales", "x.y", "bob", "post-master", "abuse")
ACTIONS = ("reject", "discard", "redirect", "redirect-domain")

names = st.sampled_from(NAMES)
# postmaster: None leaves it as it is; "" clears it (postmaster@/abuse@ then follow the action)
POSTMASTERS = (None, "", "a@one.test", "abuse@two.test", "x@remote.test", "nobody@one.test",
               "bob+pm@xn--bcher-kva.test")
domain_specs = st.tuples(st.sampled_from(ACTIONS), names, st.sampled_from(DOMAINS),
                         st.sampled_from(POSTMASTERS))
mailbox_specs = st.tuples(
    names, st.sampled_from(DOMAINS), st.lists(names, max_size=3, unique=True),
    st.sampled_from([None, 1024, 10 * 2**20]), st.booleans(), st.booleans(),
    st.lists(st.sampled_from(["x@remote.test", "a", "bob@two.test"]), max_size=2, unique=True))
edits = st.lists(st.tuples(st.sampled_from(["delete", "update", "domain", "drop-domain",
                                            "raw-domain"]),
                           mailbox_specs, domain_specs), max_size=6)


def addresses() -> list[str]:
    out = ["no-at-sign", "@one.test", "a@", "someone@elsewhere.test", "A@B\x00@one.test"]
    for d in (*DOMAINS, "bücher.test", "ONE.TEST"):
        for n in (*NAMES, "nobody", "postmaster", "Abuse", "PostMaster"):
            out += [f"{n}@{d}", f"{n.upper()}+tag@{d}", f"{n}+@{d}", f"{n}+a+b@{d}"]
    return out


async def apply(store: Store, op: str, box: tuple[Any, ...],
                dom: tuple[str, str, str, str | None]) -> None:
    """One provisioning step through the Store API; refusals (conflicts, bad values, targets
    that lead nowhere) are part of the game and change nothing. "raw-domain" writes the domain
    row behind the Store's checks (a store from before those checks, or a bulk import)."""
    name, domain, aliases, max_size, no_save, enabled, copies = box
    action, target_name, target_domain, postmaster = dom
    redirect = {"redirect": f"{target_name}@{target_domain}",
                "redirect-domain": target_domain}.get(action, "")
    if op == "raw-domain":
        path = store.engine.url.database
        assert path is not None
        with sqlite3.connect(path) as db:
            db.execute("UPDATE domains SET default_action = ?, redirect_to = ?,"
                       " postmaster = coalesce(?, postmaster) WHERE name = ?",
                       (action, redirect, postmaster, domain))
            db.execute("UPDATE directory_generation SET generation = generation + 1")
        db.close()
        return
    try:
        if op == "create":
            await store.create_mailbox(f"{name}@{domain}", aliases=aliases, max_size=max_size,
                                       no_save=no_save and bool(copies), enabled=enabled,
                                       copies_to=copies)
        elif op == "update":
            await store.update_mailbox(f"{name}@{domain}", aliases=aliases, max_size=max_size,
                                       enabled=enabled, copies_to=copies)
        elif op == "delete":
            await store.delete_mailbox(f"{name}@{domain}")
        elif op == "domain":
            pm = {} if postmaster is None else {"postmaster": postmaster}
            await store.update_domain(domain, default_action=action, redirect_to=redirect, **pm)
        elif op == "drop-domain":
            await store.delete_domain(domain, cascade=True)
            await store.create_domain(domain)
    except StoreError:
        pass


async def same_answers(store: Store, *snaps: DirectorySnapshot) -> None:
    for address in addresses():
        want = await resolve(store, address)
        for snap in snaps:
            assert await resolve(snap, address) == want, address


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty store file, copied for each example (migrations run once)."""
    path = tmp_path_factory.mktemp("snap") / "template.db"

    async def make() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        await store.close()

    asyncio.run(make())
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(domains=st.lists(domain_specs, min_size=3, max_size=3),
       boxes=st.lists(mailbox_specs, max_size=8), later=edits)
def test_answers_exactly_what_the_sql_store_answers(template: Path, tmp_path_factory: Any,
                                                    domains: list[Any], boxes: list[Any],
                                                    later: list[Any]) -> None:
    path = tmp_path_factory.mktemp("ex") / "mp.db"
    shutil.copy(template, path)

    async def run() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        try:
            early = DirectorySnapshot(str(path))  # built empty, follows every write
            for name in DOMAINS:
                await store.create_domain(name)
            for name, dom in zip(DOMAINS, domains, strict=True):
                await apply(store, "domain", ("a", name, [], None, False, True, []), dom)
            for box in boxes:
                await apply(store, "create", box, ("reject", "a", "one.test", None))
            for name, dom in zip(DOMAINS, domains, strict=True):  # now their targets may exist
                await apply(store, "domain", ("a", name, [], None, False, True, []), dom)
            early.refresh()  # what the poll does when the generation moved
            fresh = DirectorySnapshot(str(path))
            await same_answers(store, early, fresh)
            for op, box, dom in later:
                await apply(store, op, box, dom)
            early.refresh()
            fresh.refresh()
            await same_answers(store, early, fresh, DirectorySnapshot(str(path)))
            for snap in (early, fresh):
                snap.close()
                await snap.wait_closed()
        finally:
            await store.close()

    asyncio.run(run())


async def test_a_write_elsewhere_is_seen_within_the_poll_and_lookups_never_ask_sqlite(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    writer = await Store.open(url)  # the admin API in the daemon
    reader = await Store.open(url)  # a policy worker's own store
    try:
        await writer.create_domain("example.com")
        await writer.create_mailbox("info@example.com", aliases=["sales"])
        snap = await snapshot_mod.for_store(reader)
        assert snap is not None
        cache = CachedDirectory.for_store(snap)
        statements: list[str] = []
        for conn in (snap._conn, reader.reader.conn):  # type: ignore[union-attr]
            conn.set_trace_callback(statements.append)
        for i in range(2000):  # no await in between: no poll can run
            r = cache.resolved(f"Info+{i}@example.com" if i % 2 else f"sales+{i}@example.com")
            assert r is not None and r.kind is Kind.MAILBOX
        assert statements == []  # found: SQLite is not asked at all
        for i in range(100):
            r = cache.resolved(f"user{i}@example.com")
            assert r is not None and r.kind is Kind.UNKNOWN
        generation = "SELECT generation FROM directory_generation"
        assert set(statements) == {generation}  # not found: the one-row generation only

        await writer.create_mailbox("new@example.com")  # seen at once by a new address
        assert (await cache.resolve("new@example.com")).kind is Kind.MAILBOX
        await writer.update_mailbox("new@example.com", enabled=False)  # and within the poll
        t0 = time.monotonic()
        while (r := await cache.resolve("new@example.com")).mailbox.enabled:  # type: ignore[union-attr]
            assert time.monotonic() - t0 < POLL_INTERVAL * 3
            await asyncio.sleep(0.01)
        seen = time.monotonic() - t0
        assert seen <= POLL_INTERVAL * 1.5, seen
        await writer.update_mailbox("info@example.com", aliases=["office"])
        await asyncio.sleep(POLL_INTERVAL * 1.5)
        assert (await cache.resolve("sales@example.com")).kind is Kind.UNKNOWN
        assert (await cache.resolve("office@example.com")).mailbox.name == "info"  # type: ignore[union-attr]
        assert all(s.startswith("SELECT") or s in ("BEGIN", "COMMIT") for s in statements)
        snap.close()
        await snap.wait_closed()
    finally:
        await writer.close()
        await reader.close()


async def test_bulk_change_and_pruned_log_rebuild_in_the_background(tmp_path: Path,
                                                                     monkeypatch: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    store = await Store.open(url)
    try:
        await store.create_domain("example.com")
        snap = await DirectorySnapshot.open(str(tmp_path / "mp.db"))
        monkeypatch.setattr(snapshot_mod, "MAX_INCREMENTAL", 5)
        with sqlite3.connect(tmp_path / "mp.db") as db:  # a bulk import, behind the Store
            db.executemany("INSERT INTO mailboxes (domain_id, name, created_at) VALUES"
                           " (1, ?, 0)", [(f"u{i}",) for i in range(50)])
            db.execute("UPDATE directory_generation SET generation = generation + 1")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if snap.rebuilds:
                break
        assert snap.rebuilds == 1
        assert (await resolve(snap, "u49@example.com")).kind is Kind.MAILBOX
        with sqlite3.connect(tmp_path / "mp.db") as db:  # changes pruned before we read them
            db.execute("INSERT INTO mailboxes (domain_id, name, created_at) VALUES (1, 'z', 0)")
            db.execute("DELETE FROM directory_changes")
            db.execute("INSERT INTO directory_changes (kind, ref) VALUES ('m', 999999)")
            db.execute("UPDATE directory_generation SET generation = generation + 1")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if snap.rebuilds == 2:
                break
        assert (await resolve(snap, "z@example.com")).kind is Kind.MAILBOX
        snap.close()
        await snap.wait_closed()
    finally:
        await store.close()
