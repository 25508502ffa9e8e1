"""Lookup caches of other processes follow directory writes through the store's directory
generation, and only directory writes: claims, tokens and the audit log leave them warm."""

from __future__ import annotations

import asyncio

from mailpolicy.core.cache import STAMP_INTERVAL, CachedDirectory
from mailpolicy.core.directory import Kind
from mailpolicy.store import Store


async def test_a_directory_write_elsewhere_is_seen_a_claim_or_token_is_not(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    writer = await Store.open(url)  # the daemon's process
    reader = await Store.open(url)  # a worker process's own store
    try:
        await writer.create_domain("example.com")
        box = await writer.create_mailbox("info@example.com")
        cache = CachedDirectory.for_store(reader)
        assert cache.stamp is not None  # SQLite: the generation is watched
        assert (await cache.resolve("new@example.com")).kind is Kind.UNKNOWN
        assert (await cache.resolve("info@example.com")).kind is Kind.MAILBOX

        before = reader.generation()
        await writer.tokens.create("info@example.com")
        assert await writer.autoreplies.claim(box.id, "someone@remote.test", "k", 1e9, 86400)
        assert reader.generation() == before  # not directory writes
        await asyncio.sleep(STAMP_INTERVAL * 1.5)
        misses = cache.misses
        assert (await cache.resolve("info@example.com")).kind is Kind.MAILBOX
        assert cache.misses == misses  # still cached

        await writer.create_mailbox("new@example.com")
        assert reader.generation() != before
        await asyncio.sleep(STAMP_INTERVAL * 1.5)
        assert (await cache.resolve("new@example.com")).kind is Kind.MAILBOX
    finally:
        await writer.close()
        await reader.close()


async def test_generation_is_kept_across_reopening(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/mp.db"
    store = await Store.open(url)
    await store.create_domain("example.com")
    moved = store.generation()
    await store.close()
    store = await Store.open(url)  # migrations run again: the row stays, it is not reset
    try:
        assert store.generation() >= moved > 0
    finally:
        await store.close()
