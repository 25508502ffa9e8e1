"""The read-through directory cache: hits, negative answers, TTL, store version, bound."""

from __future__ import annotations

from mailpolicy.core.cache import CachedDirectory
from mailpolicy.core.model import Domain, Mailbox


class Counting:
    def __init__(self) -> None:
        self.domains = {"example.com": Domain("example.com")}
        self.boxes = {("example.com", "info"): (Mailbox("info", "example.com"), False)}
        self.calls = 0
        self.version = 0

    async def get_domain(self, name: str) -> Domain | None:
        self.calls += 1
        return self.domains.get(name)

    async def find_mailbox(self, domain: str, local: str) -> tuple[Mailbox, bool] | None:
        self.calls += 1
        return self.boxes.get((domain, local))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_hits_and_negative_answers_are_cached():
    store = Counting()
    cache = CachedDirectory(store, ttl=5, clock=Clock())
    for _ in range(3):
        assert (await cache.get_domain("example.com")).name == "example.com"
        assert await cache.get_domain("other.example") is None
        assert (await cache.find_mailbox("example.com", "info"))[0].name == "info"
        assert await cache.find_mailbox("example.com", "nobody") is None
    assert store.calls == 4
    assert cache.hits == 8 and cache.misses == 4


async def test_ttl_expires():
    store, clock = Counting(), Clock()
    cache = CachedDirectory(store, ttl=5, clock=clock)
    await cache.get_domain("example.com")
    clock.now += 4.9
    await cache.get_domain("example.com")
    assert store.calls == 1
    clock.now += 0.2
    await cache.get_domain("example.com")
    assert store.calls == 2


async def test_store_version_change_clears_everything():
    store = Counting()
    cache = CachedDirectory(store, ttl=1000, clock=Clock(), version=lambda: store.version)
    assert await cache.find_mailbox("example.com", "new") is None
    store.boxes[("example.com", "new")] = (Mailbox("new", "example.com"), False)
    store.version += 1  # what the Store does on every write
    assert (await cache.find_mailbox("example.com", "new"))[0].name == "new"


async def test_answer_fetched_across_a_write_is_not_kept():
    class Racy(Counting):
        async def get_domain(self, name: str) -> Domain | None:
            self.version += 1  # a write lands while the read is in flight
            return await super().get_domain(name)

    store = Racy()
    cache = CachedDirectory(store, ttl=1000, clock=Clock(), version=lambda: store.version)
    await cache.get_domain("example.com")
    await cache.get_domain("example.com")
    assert store.calls == 2


async def test_bounded():
    store = Counting()
    cache = CachedDirectory(store, ttl=1000, max_entries=100, clock=Clock())
    for i in range(1000):
        await cache.find_mailbox("example.com", f"u{i}")
    assert len(cache._entries) <= 100


async def test_stamp_change_clears_everything_but_only_looked_at_every_interval():
    store, clock = Counting(), Clock()
    stamp = {"v": 1}
    cache = CachedDirectory(store, ttl=1000, clock=clock, stamp=lambda: stamp["v"])
    assert await cache.find_mailbox("example.com", "new") is None
    store.boxes[("example.com", "new")] = (Mailbox("new", "example.com"), False)
    stamp["v"] = 2  # another process wrote to the database
    assert await cache.find_mailbox("example.com", "new") is None  # not looked yet
    clock.now += 0.2
    assert (await cache.find_mailbox("example.com", "new"))[0].name == "new"


def test_resolved_answers_a_miss_at_once_only_from_a_synchronous_store():
    from mailpolicy.core.directory import Kind

    store = Counting()
    cache = CachedDirectory(store, ttl=5, clock=Clock())
    assert cache.resolved("info@example.com") is None  # may need I/O: the async way answers
    assert store.calls == 0
    cache = CachedDirectory(store, ttl=5, clock=Clock(), synchronous=True)
    first = cache.resolved("info@example.com")
    assert first is not None and first.kind is Kind.MAILBOX and first.mailbox.name == "info"
    assert cache.resolved("nobody@example.com").kind is Kind.UNKNOWN
    calls = store.calls
    assert cache.resolved("info@example.com") is first and store.calls == calls  # remembered


async def test_for_store_wires_what_the_store_tells() -> None:
    from mailpolicy.core.cache import DEFAULT_TTL, WATCHED_TTL
    from mailpolicy.core.directory import StoreDirectory

    class Told(Counting):
        reads_synchronously = False
        gen: int | None = None

        def generation(self) -> int | None:
            return self.gen

    store = Told()
    typed: StoreDirectory = store  # the protocol the services' stores meet
    cache = CachedDirectory.for_store(typed)
    assert (cache.ttl, cache.stamp, cache.synchronous) == (DEFAULT_TTL, None, False)
    assert await cache.find_mailbox("example.com", "new") is None
    store.boxes[("example.com", "new")] = (Mailbox("new", "example.com"), False)
    store.version += 1
    assert (await cache.find_mailbox("example.com", "new"))[0].name == "new"

    store.gen, store.reads_synchronously = 7, True
    cache = CachedDirectory.for_store(store)
    assert (cache.ttl, cache.stamp is not None, cache.synchronous) == (WATCHED_TTL, True, True)
