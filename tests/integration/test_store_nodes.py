"""The node registry, mailbox placement and usage figures on SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pgserver import PgServer, pg_module

from mailpolicy.core.model import NodeState
from mailpolicy.store import Conflict, Invalid, NotFound, Store

pg_fixture = pg_module  # provides the `pg` fixture (a private PostgreSQL)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    else:
        url = await asyncio.to_thread(request.getfixturevalue("pg").createdb)
    s = await Store.open(url)
    await s.create_domain("example.test")
    yield s
    await s.close()


async def test_without_nodes_a_mailbox_has_the_implicit_home(store: Store) -> None:
    mb = await store.create_mailbox("a@example.test")
    assert mb.home_node == ""
    with pytest.raises(Invalid) as e:
        await store.create_mailbox("b@example.test", node="n9")
    assert e.value.field == "node"


async def test_node_add_edit_remove_and_refusals(store: Store) -> None:
    n = await store.nodes.add("n1", lmtp="127.0.0.2:24", imap="127.0.0.2:143")
    assert (n.name, n.lmtp, n.imap_host, n.imap_port, n.state) == (
        "n1", "127.0.0.2:24", "127.0.0.2", 143, NodeState.ACTIVE)
    with pytest.raises(Conflict):
        await store.nodes.add("n1", lmtp="127.0.0.2:24")
    for kw, field in (({"name": "N 1", "lmtp": "x:1"}, "name"),
                      ({"name": "n2", "lmtp": "nohostport"}, "lmtp"),
                      ({"name": "n2", "lmtp": "h:1", "imap": "h:99999"}, "imap"),
                      ({"name": "n2", "lmtp": "h:1", "pop3_port": 0}, "pop3_port")):
        name = kw.pop("name")
        with pytest.raises(Invalid) as e:
            await store.nodes.add(name, **kw)
        assert e.value.field == field
    assert [x.name for x in await store.nodes.list()] == ["n1"]
    n = await store.nodes.edit("n1", state="draining")
    assert n.state is NodeState.DRAINING
    with pytest.raises(Invalid):
        await store.nodes.edit("n1", state="gone")
    with pytest.raises(NotFound):
        await store.nodes.edit("n7", state="down")
    await store.create_mailbox("a@example.test", node="n1")
    with pytest.raises(Conflict):
        await store.nodes.remove("n1")
    await store.delete_mailbox("a@example.test")
    await store.nodes.remove("n1")
    assert await store.nodes.list() == []
    assert [r["action"] for r in await store.list_audit(10)][:3] == [
        "node.remove", "mailbox.delete", "mailbox.create"]


async def test_placement_fewest_bytes_among_active_nodes(store: Store) -> None:
    for name in ("n1", "n2", "n3"):
        await store.nodes.add(name, lmtp=f"127.0.0.{name[1]}:24")
    a = await store.create_mailbox("a@example.test")
    assert a.home_node == "n1"  # all empty: by name
    await store.nodes.set_usage(a.id, 5000)
    b = await store.create_mailbox("b@example.test")
    assert b.home_node == "n2"
    await store.nodes.set_usage(b.id, 100)
    await store.nodes.edit("n3", state="draining")
    c = await store.create_mailbox("c@example.test")
    assert c.home_node == "n2"  # n3 drains; n2 holds fewer bytes than n1
    assert await store.nodes.usage(b.id) == 100
    d = await store.create_mailbox("d@example.test", node="n3")  # draining: only when asked
    assert d.home_node == "n3"
    await store.nodes.edit("n3", state="down")
    with pytest.raises(Invalid):
        await store.create_mailbox("e@example.test", node="n3")
    assert (await store.nodes.totals())["n2"] == (2, 100)
    found = await store.find_mailbox("example.test", "b")
    assert found is not None and found[0].home_node == "n2"


async def test_register_creates_updates_and_heartbeats(store: Store) -> None:
    old = await store.create_mailbox("old@example.test")  # from the single-host days
    assert old.home_node == ""
    await store.nodes.register("n1", lmtp="127.0.0.2:24")
    await store.nodes.register("n2", lmtp="127.0.0.3:24")  # not the first: adopts nothing
    found = await store.get_mailbox("old@example.test")
    assert found is not None and found.home_node == "n1"
    n = await store.nodes.get("n1")
    assert n is not None and n.last_seen is not None and n.state is NodeState.ACTIVE
    before_gen = store.version
    await store.nodes.register("n1", lmtp="127.0.0.2:24")  # unchanged: only a heartbeat
    assert store.version == before_gen
    await store.nodes.register("n1", lmtp="127.0.0.9:24", imap="127.0.0.9:143")
    n = await store.nodes.get("n1")
    assert n is not None and n.lmtp == "127.0.0.9:24" and n.imap_host == "127.0.0.9"


async def _wait_for(predicate, limit: float) -> float:
    """Seconds until predicate() is true (bounded)."""
    start = asyncio.get_running_loop().time()
    while not predicate():
        elapsed = asyncio.get_running_loop().time() - start
        assert elapsed < limit, f"not within {limit}s"
        await asyncio.sleep(0.02)
    return asyncio.get_running_loop().time() - start


async def test_postgresql_changes_reach_other_processes_caches_within_a_second(
        pg: PgServer) -> None:
    from mailpolicy.core.cache import WATCHED_TTL, CachedDirectory
    from mailpolicy.core.directory import Kind

    url = await asyncio.to_thread(pg.createdb)
    writer, reader = await Store.open(url), await Store.open(url)
    try:
        await writer.create_domain("example.test")
        cache = CachedDirectory.for_store(reader)
        assert cache.ttl == WATCHED_TTL  # watched: the TTL is only a backstop
        assert (await cache.resolve("new@example.test")).kind is Kind.UNKNOWN  # cached miss
        await _wait_for(lambda: reader.watcher is not None
                        and reader.watcher.fresh_at > float("-inf"), 10)
        await writer.create_mailbox("new@example.test")

        async def seen() -> bool:
            return (await cache.resolve("new@example.test")).kind is Kind.MAILBOX

        start = asyncio.get_running_loop().time()
        while not await seen():
            assert asyncio.get_running_loop().time() - start < 1.0, "not seen within 1 s"
            await asyncio.sleep(0.02)
        assert reader.watcher is not None and reader.watcher.notifications >= 1
        # a change without NOTIFY (say, lost with a connection) is found by the poll
        gen = reader.watcher.generation
        async with writer.engine.begin() as conn:
            await conn.exec_driver_sql(
                "UPDATE directory_generation SET generation = generation + 1")
        took = await _wait_for(lambda: reader.watcher.generation > gen, 3)
        assert took < 2.5
    finally:
        await writer.close()
        await reader.close()


async def test_autoreply_claims_from_several_nodes_at_once_have_one_winner(
        store: Store) -> None:
    """Nodes are separate processes on one store: their claims race through the one upsert."""
    mb = await store.create_mailbox("vac@example.test")
    url = store.engine.url.render_as_string(hide_password=False)
    others = [await Store.open(url) for _ in range(3)]
    try:
        claimers = [store, *others]
        for round_, now in enumerate((1e9, 1e9 + 10, 1e9 + 100)):  # first, too soon, due
            senders = [f"s{k}@x.test" for k in range(2) for _ in range(3) for _s in claimers]
            results = await asyncio.gather(*[
                claimers[i % len(claimers)].autoreplies.claim(mb.id, who, "k", now, 50)
                for i, who in enumerate(senders)])
            for who in set(senders):
                won = sum(r for w, r in zip(senders, results, strict=True) if w == who)
                assert won == (0 if round_ == 1 else 1), (round_, who, results)
    finally:
        for s in others:
            await s.close()


async def test_processes_opening_the_store_at_once_seed_the_ip_pool_once(store: Store) -> None:
    """A node's worker processes start together: seeding the outbound IP pool must not race."""
    import sys

    url = store.engine.url.render_as_string(hide_password=False)
    pool = [f"192.0.2.{i}" for i in range(10, 40)]
    code = ("import asyncio, sys, time\nfrom mailpolicy.store import Store\n"
            "async def main():\n"
            "    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "    s = await Store.open(sys.argv[1], ip_pool=sys.argv[3:])\n"
            "    await s.close()\n"
            "asyncio.run(main())\n")
    start_at = str(time.time() + 4)  # after every interpreter has started: all at once
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url, start_at, *pool, stderr=asyncio.subprocess.PIPE)
        for _ in range(6)]
    results = [(await asyncio.wait_for(p.communicate(), 60))[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [r.decode()[-500:]
                                                             for r in results]
