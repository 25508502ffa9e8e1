"""Sender ownership (core.senders) and the `senders` socketmap over a real SQLite store."""

from __future__ import annotations

import pytest

from mailpolicy.core.senders import grant_keys, normalize_grant
from mailpolicy.socketmap.maps import lookup
from mailpolicy.socketmap.protocol import Query
from mailpolicy.store import Store


def test_grant_keys_and_normalize() -> None:
    assert grant_keys("Bob+News@Example.ORG") == ("bob@example.org", "@example.org")
    assert grant_keys("nope") is None
    assert normalize_grant("@Example.ORG") == "@example.org"
    assert normalize_grant("Sales@example.org") == "sales@example.org"
    for bad in ("x+y@example.org", "nodomain", "@", "a@b@"):
        with pytest.raises(ValueError):
            normalize_grant(bad)


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await s.create_domain("example.org")
    await s.create_domain("other.org")
    await s.create_mailbox("alice@example.org", aliases=["sales"])
    await s.create_mailbox("bob@example.org")
    await s.create_mailbox("carol@other.org")
    yield s
    await s.close()


async def _senders(store: Store, key: str) -> str:
    reply = await lookup(store, Query("senders", key))
    return f"{reply.status} {reply.data}".strip()


async def test_senders_map(store: Store) -> None:
    assert await _senders(store, "alice@example.org") == "OK alice@example.org"
    assert await _senders(store, "Sales+x@Example.org") == "OK alice@example.org"
    assert await _senders(store, "nobody@example.org") == "NOTFOUND"
    assert await _senders(store, "someone@gmail.example") == "NOTFOUND"
    await store.sending.set_grants("bob@example.org", ["sales@example.org", "@other.org",
                                                       "bob@gmail.example"])
    assert await _senders(store, "sales@example.org") == "OK alice@example.org, bob@example.org"
    assert await _senders(store, "carol@other.org") == "OK carol@other.org, bob@example.org"
    assert await _senders(store, "anything@other.org") == "OK bob@example.org"
    assert await _senders(store, "bob+x@gmail.example") == "OK bob@example.org"
    await store.update_mailbox("bob@example.org", enabled=False)
    assert await _senders(store, "anything@other.org") == "NOTFOUND"
    assert await store.sending.grants((await store.get_mailbox("bob@example.org")).id) == (
        "sales@example.org", "@other.org", "bob@gmail.example")


async def test_grants_refuse_bad_input(store: Store) -> None:
    from mailpolicy.store.errors import Invalid, NotFound

    with pytest.raises(Invalid):
        await store.sending.set_grants("bob@example.org", ["not an address"])
    with pytest.raises(NotFound):
        await store.sending.set_grants("zed@example.org", ["@example.org"])
    assert await store.sending.granted("sales@example.org", "@example.org") == []


async def test_an_empty_pool_gives_no_outbound_ip(tmp_path) -> None:
    s = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.sqlite'}", ip_pool=())
    try:
        d = await s.create_domain("nopool.example", outbound_ip="auto")
        assert d.outbound_ip == ""  # never 127.0.0.1: Postfix's default address is used
        from mailpolicy.store.errors import Invalid

        with pytest.raises(Invalid):
            await s.create_domain("other.example", outbound_ip="203.0.113.9")
    finally:
        await s.close()
