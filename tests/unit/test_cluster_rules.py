"""Pure cluster rules: home node choice, the transport map, LMTP's refusal of mailboxes at home
elsewhere, the policy's usage source, and the Postfix wiring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from memdir import MemoryDirectory

from mailpolicy import config
from mailpolicy.core import cluster
from mailpolicy.core.directory import resolve
from mailpolicy.core.model import DefaultAction, Domain, Mailbox, Node, NodeState
from mailpolicy.deploy import postfix
from mailpolicy.lmtp.deliver import Target, rcpt_decision
from mailpolicy.maildir.reader import UsageReader
from mailpolicy.policy.usage import HomeUsage
from mailpolicy.socketmap.protocol import Parser, encode_query
from mailpolicy.socketmap.server import SocketmapService

NODES = {"n1": Node("n1", "127.0.0.2:10024"), "n2": Node("n2", "127.0.0.3:10024"),
         "v6": Node("v6", "[::1]:24")}


class ClusterDirectory(MemoryDirectory):
    async def get_node(self, name: str) -> Node | None:
        return NODES.get(name)


DIRECTORY = ClusterDirectory(
    [Domain("example.com"), Domain("discard.example", default_action=DefaultAction.DISCARD),
     Domain("redir.example", default_action=DefaultAction.REDIRECT, redirect_to="bob@example.com")],
    [Mailbox("ann", "example.com", aliases=("sales",), home_node="n1", id=1),
     Mailbox("bob", "example.com", home_node="n2", id=2),
     Mailbox("old", "example.com", home_node="", id=3),  # before the cluster: local everywhere
     Mailbox("ghost", "example.com", home_node="gone", id=4),
     Mailbox("six", "example.com", home_node="v6", id=5)])


def answers(node: str, *keys: str) -> list[bytes]:
    service = SocketmapService(DIRECTORY, 100_000, node=node)  # type: ignore[arg-type]

    async def run() -> list[bytes]:
        return [(await service.answer(p)).encode()
                for k in keys for p in Parser().feed(encode_query("transport", k))]

    return asyncio.run(run())


def test_transport_map_names_the_home_nodes_lmtp() -> None:
    got = answers("n1", "bob@example.com", "BOB+tag@Example.COM", "redirect@redir.example",
                  "ann@example.com", "sales@example.com", "old@example.com", "nobody@example.com",
                  "x@discard.example", "x@elsewhere.example", "*", "example.com", "@example.com",
                  "six@example.com", "ghost@example.com")
    hop = b"OK mailpolicy-lmtp:inet:127.0.0.3:10024"
    nf = b"9:NOTFOUND ,"
    assert got[:3] == [b"%d:%s," % (len(hop), hop)] * 3  # +ext stripped, redirect followed
    assert got[3:12] == [nf] * 9  # at home here, no home, unknown, foreign, probes
    six = b"OK mailpolicy-lmtp:inet:[::1]:24"
    assert got[12] == b"%d:%s," % (len(six), six)
    assert got[13].split(b":", 1)[1].startswith(b"TEMP home node gone")  # deferred, not bounced


def test_transport_map_without_a_cluster_finds_nothing() -> None:
    assert answers("", "bob@example.com") == [b"9:NOTFOUND ,"]


def test_lmtp_defers_a_mailbox_at_home_elsewhere() -> None:
    cfg = config.from_dict({"cluster": {"node": "n1"}})

    async def decide(addr: str) -> Target | object:
        return rcpt_decision(cfg, addr, await resolve(DIRECTORY, addr))

    remote = asyncio.run(decide("bob@example.com"))
    assert str(remote) == "451 4.3.0 <bob@example.com> mailbox lives on node n2, not here"
    assert isinstance(asyncio.run(decide("ann@example.com")), Target)
    assert isinstance(asyncio.run(decide("old@example.com")), Target)
    single = config.from_dict({})
    r = asyncio.run(resolve(DIRECTORY, "bob@example.com"))
    assert isinstance(rcpt_decision(single, "bob@example.com", r), Target)


def test_choose_home_reachable_and_nexthop() -> None:
    nodes = [Node("a", "h:1"), Node("b", "h:2"), Node("c", "h:3", state=NodeState.DRAINING)]
    assert cluster.choose_home(nodes, {}) == "a"
    assert cluster.choose_home(nodes, {"a": 10, "b": 5, "c": 0}) == "b"
    assert cluster.choose_home(nodes[2:], {}) is None
    n = Node("a", "h:1", last_seen=1000.0)
    assert cluster.reachable(n, 5, now=1015) and not cluster.reachable(n, 5, now=1016)
    assert not cluster.reachable(Node("a", "h:1"), 5)


def test_postfix_transport_maps_only_in_a_cluster() -> None:
    assert "transport_maps" not in postfix.main_cf(config.from_dict({}), ())
    cfg = config.from_dict({"cluster": {"node": "n1"}})
    assert postfix.main_cf(cfg, ())["transport_maps"] == (
        "socketmap:inet:127.0.0.1:10041:transport")


@pytest.mark.parametrize(("cluster_cfg", "key"), [
    ({"node": "Node 1"}, "cluster.node"), ({"node": "n1", "lmtp": "x"}, "cluster.lmtp"),
    ({"heartbeat_seconds": 0}, "cluster.heartbeat_seconds")])
def test_bad_cluster_config_names_the_key(cluster_cfg: dict, key: str) -> None:
    with pytest.raises(config.ConfigError, match=key):
        config.from_dict({"cluster": cluster_cfg})


def test_home_usage_reads_the_store_for_remote_mailboxes(tmp_path: Path) -> None:
    asked: list[int] = []
    now = [0.0]

    async def remote(mailbox_id: int) -> int:
        asked.append(mailbox_id)
        return 4242

    usage = HomeUsage(UsageReader(tmp_path), remote, "n1", ttl=1.0, clock=lambda: now[0])
    ann, bob = DIRECTORY.names[("example.com", "ann")][0], DIRECTORY.names[("example.com",
                                                                              "bob")][0]
    assert usage.known(bob) is None
    assert asyncio.run(usage(bob)) == 4242 and usage.known(bob) == 4242
    assert asyncio.run(usage(ann)) == 0  # local: its (missing) Maildir, not the store
    now[0] = 1.5
    assert usage.known(bob) is None
    asyncio.run(usage(bob))
    assert asked == [2, 2]


def test_lmtp_defers_a_mailbox_while_it_moves() -> None:
    cfg = config.from_dict({"cluster": {"node": "n1"}})
    d = ClusterDirectory([Domain("example.com")],
                         [Mailbox("ann", "example.com", home_node="n1", moving_to="n2", id=1)])
    r = asyncio.run(resolve(d, "ann@example.com"))
    assert str(rcpt_decision(cfg, "ann@example.com", r)) == (
        "451 4.2.0 <ann@example.com> mailbox is moving to node n2, try again later")


def test_generation_watcher_stamp_and_dsn() -> None:
    from mailpolicy.store.changes import GenerationWatcher, asyncpg_dsn

    assert asyncpg_dsn("postgresql+asyncpg://mp:pw@db:5433/mail?ssl=disable") == (
        "postgresql://mp:pw@db:5433/mail?sslmode=disable")
    w = GenerationWatcher("postgresql+asyncpg://mp@db/mail")
    stale = w.stamp()  # no event loop: nothing started, and nothing known yet
    assert isinstance(stale, tuple) and stale[0] == "stale" and w._task is None
    w._seen(7)
    assert w.stamp() == 7
    w._notified(None, 0, "mailpolicy_directory", "9")
    w._seen(8)  # a poll answered before the NOTIFY arrived: never backwards
    assert w.stamp() == 9 and w.notifications == 1
