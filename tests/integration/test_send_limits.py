"""Send limits: counted exactly in the store across processes' connections, per mailbox and per
domain, and answered by the policy service at DATA for authenticated clients."""

from __future__ import annotations

import asyncio

import pytest

from mailpolicy import config
from mailpolicy.policy.limits import SendLimiter, applies, limits_for
from mailpolicy.policy.protocol import Request
from mailpolicy.store import Store
from mailpolicy.store.errors import Invalid
from mailpolicy.store.sending import Limit


def _request(login: str, state: str = "DATA", count: str = "1") -> Request:
    return Request(state, "", login, "Q1", "1.2", "", "", login, count)


def test_limits_for_uses_the_mailbox_override_and_the_domain() -> None:
    cfg = config.Sending(messages_per_hour=5, recipients_per_hour=50,
                         domain_messages_per_hour=9, domain_recipients_per_hour=90)
    mine, dom = limits_for(cfg, "a@example.org", (None, 7))
    assert (mine.key, mine.messages, mine.recipients) == ("mailbox:a@example.org", 5, 7)
    assert (dom.key, dom.messages, dom.recipients) == ("domain:example.org", 9, 90)
    assert applies(_request("a@example.org")) and not applies(_request(""))
    assert not applies(_request("a@example.org", "RCPT"))


@pytest.fixture
async def stores(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    a = await Store.open(url)
    b = await Store.open(url)  # another worker's store over the same file
    await a.create_domain("example.org")
    await a.create_mailbox("a@example.org")
    await a.create_mailbox("b@example.org")
    yield a, b
    await a.close()
    await b.close()


async def test_counting_is_exact_across_connections(stores) -> None:
    a, b = stores
    limit = [Limit("mailbox:x", 25, 0, "mailbox x")]
    results = await asyncio.gather(*(s.sending.count(limit, 1, 1, now=7200.0)
                                     for _ in range(30) for s in (a, b)))
    assert sum(r is None for r in results) == 25
    assert {r for r in results if r is not None} == {"mailbox x limit of 25 messages per hour"}
    assert await a.sending.count(limit, 1, 1, now=3 * 3600.0) is None  # the next hour


async def test_all_or_nothing_and_recipient_limit(stores) -> None:
    a, _ = stores
    limits = [Limit("mailbox:y", 0, 10, "mailbox y"), Limit("domain:d", 0, 12, "domain d")]
    assert await a.sending.count(limits, 1, 8, now=0.0) is None
    assert await a.sending.count(limits, 1, 3, now=0.0) == (
        "mailbox y limit of 10 recipients per hour")
    # 8 + 4: the refused 3 were not kept
    assert await a.sending.count([limits[1]], 1, 4, now=0.0) is None
    assert await a.sending.count([limits[1]], 1, 1, now=0.0) == (
        "domain d limit of 12 recipients per hour")


async def test_limiter_defers_with_the_limit_named(stores) -> None:
    a, _ = stores
    await a.sending.set_limits("a@example.org", messages_per_hour=2)
    limiter = SendLimiter(config.Sending(messages_per_hour=100), a)
    actions = [(await limiter.decide(_request("a@example.org"))).action for _ in range(3)]
    assert actions[:2] == ["DUNNO", "DUNNO"]
    assert actions[2].startswith("450 4.7.1 ") and "a@example.org limit of 2 messages" in actions[2]
    assert (await limiter.decide(_request("b@example.org"))).action == "DUNNO"  # the default
    with pytest.raises(Invalid):
        await a.sending.set_limits("a@example.org", messages_per_hour=-1)
