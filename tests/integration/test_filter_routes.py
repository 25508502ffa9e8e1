"""Forwarded copies and autoreplies to other domains go back into Postfix through the routed
listener of their domain's outbound IP; local ones, and domains without a routed address, take
the plain reinjection; a routed listener out of reach falls back to the plain one. The two
next hops are aiosmtpd sinks standing in for Postfix's reinjection smtpds (the e2e test
test_outgoing_signing_e2e.py runs the real ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest
from test_filter_server import HOST, MSG, Sink, free_port, send, start_sink

from mailpolicy import config
from mailpolicy.smtp.server import start
from mailpolicy.store import Store

ROUTED_IP = "127.0.0.2"  # the pool address with a routed listener (the routed sink)
OTHER_IP = "127.0.0.3"  # a store address outside this host's pool: no routed listener


@dataclass
class World:
    store: Store
    plain: Sink
    routed: Sink
    port: int  # the filter's
    servers: list


async def provision(store: Store) -> None:
    await store.create_domain("ours.test", outbound_ip=ROUTED_IP)
    await store.create_domain("other.test", outbound_ip=OTHER_IP)
    await store.create_domain("red.test", outbound_ip=ROUTED_IP, default_action="redirect",
                              redirect_to="far@remote.test")
    await store.create_mailbox("bob@ours.test")
    await store.create_mailbox("dave@ours.test")
    await store.create_mailbox("carol@ours.test", copies_to=["dave", "ext@remote.test"])
    await store.create_mailbox("gone@ours.test", copies_to=["away@remote.test"], no_save=True)
    await store.create_mailbox("olga@other.test", copies_to=["o@remote.test"])


async def open_world(tmp_path: Path, mode: str, routed: Sink) -> World:
    """The filter with a plain sink and `routed` at the routed port of ROUTED_IP (a sink
    never started: nothing listens there)."""
    plain = await start_sink(Sink())
    port = free_port()
    cfg = config.from_dict({
        "paths": {"state_dir": str(tmp_path)},
        "listen": {"filter": f"{HOST}:{port}"},
        "submission": {"enabled": False},  # no originating listener on its fixed port
        "outbound": {"ip_pool": [ROUTED_IP]},
        "reinject": {"host": HOST, "port": plain.port, "timeout_seconds": 5.0,
                     "routed_port_base": routed.port},
        "filter": {"hostname": "mx.ours.test", "srs_domain": "fwd.ours.test", "mode": mode},
    })
    store = await Store.open(cfg.store_url, ip_pool=(ROUTED_IP, OTHER_IP))
    await provision(store)
    servers = await start(cfg, store)
    return World(store, plain, routed, port, servers)


async def close_world(w: World) -> None:
    for s in w.servers:
        s.close()
    for sink in (w.plain, w.routed):
        if sink.server is not None:
            sink.server.close()
    await w.store.close()


@pytest.fixture(params=["after-queue", "before-queue"])
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    w = await open_world(tmp_path, request.param, await start_sink(Sink()))
    yield w
    await close_world(w)


async def test_external_copy_is_routed_local_copy_stays_plain(world: World) -> None:
    code, text = await send(world.port, ["carol@ours.test"])
    assert code == 250, text
    [local] = world.plain.messages
    assert local.rcpt_tos == ["carol@ours.test", "dave@ours.test"]
    [external] = world.routed.messages
    assert external.rcpt_tos == ["ext@remote.test"]
    assert external.mail_from.startswith("SRS0=")  # SRS and ARC happen as before
    assert b"forwarded=<carol@ours.test>" in external.content
    assert text == "2.0.0 Ok: queued as Q1; Ok: queued as Q1"  # both next hops said 250


async def test_mail_sent_straight_to_another_domain_is_not_rerouted(world: World) -> None:
    """Only what we forward is routed: mail for a foreign recipient (relayed by Postfix's own
    rules, or submitted) keeps the plain path and the sender-dependent transport."""
    assert (await send(world.port, ["x@remote.test"]))[0] == 250
    assert [m.rcpt_tos for m in world.plain.messages] == [["x@remote.test"]]
    assert world.routed.messages == []


async def test_redirect_of_a_domain_to_another_domain_is_routed(world: World) -> None:
    assert (await send(world.port, ["anyone@red.test"]))[0] == 250
    assert world.plain.messages == []
    [got] = world.routed.messages
    assert got.rcpt_tos == ["far@remote.test"]


async def test_do_not_save_copy_and_its_autoreply_are_routed(world: World) -> None:
    await world.store.autoreplies.set("gone@ours.test", enabled=True, message="Away",
                                      subject="Away")
    msg = MSG.replace(b"To: bob@ours.test", b"To: gone@ours.test")
    assert (await send(world.port, ["gone@ours.test"], msg))[0] == 250
    assert world.plain.messages == []
    forwarded, reply = world.routed.messages
    assert forwarded.rcpt_tos == ["away@remote.test"]
    assert reply.mail_from in ("", "<>") and reply.rcpt_tos == ["alice@sender.test"]
    assert b"Auto-Submitted: auto-replied" in reply.content


async def test_autoreply_to_a_local_sender_stays_plain(world: World) -> None:
    await world.store.autoreplies.set("gone@ours.test", enabled=True, message="Away",
                                      subject="Away")
    msg = MSG.replace(b"To: bob@ours.test", b"To: gone@ours.test").replace(
        b"alice@sender.test", b"bob@ours.test")
    assert (await send(world.port, ["gone@ours.test"], msg, sender="bob@ours.test"))[0] == 250
    [reply] = world.plain.messages
    assert reply.mail_from in ("", "<>") and reply.rcpt_tos == ["bob@ours.test"]
    [forwarded] = world.routed.messages  # the copy still leaves from ours.test's address
    assert forwarded.rcpt_tos == ["away@remote.test"]


async def test_domain_whose_address_has_no_routed_listener_takes_the_plain_path(
        world: World) -> None:
    assert (await send(world.port, ["olga@other.test"]))[0] == 250
    assert [m.rcpt_tos for m in world.plain.messages] == [["olga@other.test"],
                                                          ["o@remote.test"]]
    assert world.routed.messages == []


async def test_routed_listener_down_falls_back_to_the_plain_reinjection(
        tmp_path: Path) -> None:
    down = Sink(port=free_port())  # nothing listens there
    w = await open_world(tmp_path, "after-queue", down)
    try:
        code, text = await send(w.port, ["carol@ours.test"])
        assert code == 250, text
        rcpts = sorted(r for m in w.plain.messages for r in m.rcpt_tos)
        assert rcpts == ["carol@ours.test", "dave@ours.test", "ext@remote.test"]
        await w.store.autoreplies.set("gone@ours.test", enabled=True, message="Away",
                                      subject="Away")
        msg = MSG.replace(b"To: bob@ours.test", b"To: gone@ours.test")
        assert (await send(w.port, ["gone@ours.test"], msg))[0] == 250
        replies = [m for m in w.plain.messages if m.mail_from in ("", "<>")]
        assert [m.rcpt_tos for m in replies] == [["alice@sender.test"]]
    finally:
        await close_world(w)


async def test_routed_listener_refusing_a_recipient_defers_the_whole_message(
        world: World) -> None:
    """A routed next hop's refusal has the same meaning as the plain one's: nothing is
    acknowledged before every next hop said 250 (after-queue: a 4xx, Postfix retries)."""
    world.routed.refuse_rcpt["ext@remote.test"] = "450 4.7.1 try later"
    code, text = await send(world.port, ["carol@ours.test"])
    assert code == 450 and "ext@remote.test" in text, text


async def test_after_a_refusal_on_the_fallback_path_the_session_goes_on(tmp_path: Path) -> None:
    """The routed listener is down, so the copy falls back to the plain one, which refuses
    it: the connection that refused is reset, and the next message of the same Postfix
    session passes."""
    w = await open_world(tmp_path, "after-queue", Sink(port=free_port()))
    w.plain.refuse_rcpt["ext@remote.test"] = "450 4.2.0 busy"
    client = aiosmtplib.SMTP(hostname=HOST, port=w.port, timeout=10, start_tls=False)
    try:
        await client.connect()
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("alice@sender.test", ["carol@ours.test"], MSG)
        assert refused.value.code == 450
        w.plain.refuse_rcpt.clear()
        await client.rset()
        assert (await client.sendmail("alice@sender.test", ["carol@ours.test"], MSG))[1]
        rcpts = [r for m in w.plain.messages for r in m.rcpt_tos]
        assert rcpts.count("ext@remote.test") == 1
    finally:
        client.close()
        await close_world(w)


async def test_this_hosts_own_names_are_not_another_domain(world: World) -> None:
    """Postfix delivers the host's own names itself (mydestination, SRS bounces): a copy
    or an autoreply to root@<filter host name> takes the plain reinjection."""
    await world.store.update_mailbox("gone@ours.test", copies_to=["root@mx.ours.test"])
    await world.store.autoreplies.set("gone@ours.test", enabled=True, message="Away",
                                      subject="Away")
    msg = MSG.replace(b"To: bob@ours.test", b"To: gone@ours.test").replace(
        b"alice@sender.test", b"cron@fwd.ours.test")
    assert (await send(world.port, ["gone@ours.test"], msg, sender="cron@fwd.ours.test"))[0] \
        == 250
    assert world.routed.messages == []
    assert sorted(r for m in world.plain.messages for r in m.rcpt_tos) == [
        "cron@fwd.ours.test", "root@mx.ours.test"]
