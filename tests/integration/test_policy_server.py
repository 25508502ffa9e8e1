"""Policy service over real sockets with a real Store on a temp SQLite file."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from threaded import exchange, fuzz_live_server, serving

from mailpolicy import config
from mailpolicy.maildir.writer import maildir_for
from mailpolicy.policy import start
from mailpolicy.policy.protocol import Parser
from mailpolicy.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(tmp: Path, **policy: object) -> config.Config:
    return config.from_dict({
        "paths": {"state_dir": str(tmp)},
        "listen": {"policy": f"127.0.0.1:{free_port()}"},
        "limits": {"policy_request_max": 4096},
        "policy": policy,
    })


def request(recipient: str, state: str = "RCPT", size: int = 0) -> bytes:
    return (f"request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\n"
            f"client_address=192.0.2.1\nclient_name=mx.example.net\nqueue_id=\n"
            f"sender=s@example.net\nrecipient={recipient}\ninstance=a.b.c\nsize={size}\n"
            f"ccert_subject=CN=x\n\n").encode()


async def populate(store: Store, root: Path) -> None:
    await store.create_domain("example.com")
    await store.create_domain("discard.example", default_action="discard")
    await store.create_mailbox("info@example.com", aliases=["sales"], max_size="10K")
    await store.create_mailbox("off@example.com", enabled=False)
    await store.create_mailbox("fwd@example.com", max_size="1K", no_save=True,
                               copies_to=["x@ext.example"])
    # 9000 bytes already stored in info's Maildir (Maildir++ name with ,S=)
    md = maildir_for(root, "example.com", "info")
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    (md / "new" / "1700000000.M1P1.host,S=9000").write_bytes(b"x" * 10)


@pytest.fixture
async def service(tmp_path):
    cfg = make_config(tmp_path)
    store = await Store.open(cfg.store_url)
    await populate(store, cfg.maildir_root)
    servers = await start(cfg, store)
    host, port = config.split_hostport(cfg.listen.policy)
    yield store, host, port, cfg
    for s in servers:
        s.close()
        await s.wait_closed()
    await store.close()


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)


async def test_every_rule_on_one_persistent_connection(service):
    _store, host, port, _cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    cases = [
        (request("info@example.com"), b"action=DUNNO\n\n"),
        (request("Sales+tag@EXAMPLE.com"), b"action=DUNNO\n\n"),
        (request("nobody@example.com"), b"action=550 5.1.1 mailbox does not exist\n\n"),
        (request("nobody@discard.example"), b"action=DUNNO\n\n"),
        (request("off@example.com"),
         b"action=550 5.2.1 Mailbox disabled, not accepting messages\n\n"),
        (request("info@example.com", size=2000),
         b"action=552 5.2.2 Mailbox is full\n\n"),
        (request("info@example.com", size=1000), b"action=DUNNO\n\n"),
        (request("fwd@example.com", size=5000), b"action=DUNNO\n\n"),
        (request("a@elsewhere.example"), b"action=DUNNO\n\n"),
        (request("nobody@example.com", state="DATA"), b"action=DUNNO\n\n"),
    ]
    for data, reply in cases:
        assert await ask(reader, writer, data) == reply
    # byte at a time, on the same connection
    data = request("nobody@example.com")
    for i in range(len(data) - 1):
        writer.write(data[i:i + 1])
        await writer.drain()
    await asyncio.sleep(0.05)
    assert await ask(reader, writer, data[-1:]) == cases[2][1]
    # still open after an idle moment
    await asyncio.sleep(0.2)
    assert await ask(reader, writer, request("info@example.com")) == b"action=DUNNO\n\n"
    writer.close()


async def test_pipelined_requests_answered_in_order(service):
    _store, host, port, _cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request("info@example.com") + request("nobody@example.com")
                 + request("off@example.com"))
    replies = [await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) for _ in range(3)]
    assert [r.split(b" ")[0] for r in replies] == [b"action=DUNNO\n\n", b"action=550",
                                                  b"action=550"]
    assert b"5.1.1" in replies[1] and b"5.2.1" in replies[2]
    writer.close()


async def test_quota_code_452(tmp_path):
    cfg = make_config(tmp_path, quota_code=452)
    store = await Store.open(cfg.store_url)
    await populate(store, cfg.maildir_root)
    servers = await start(cfg, store)
    try:
        reader, writer = await asyncio.open_connection(*config.split_hostport(cfg.listen.policy))
        assert await ask(reader, writer, request("info@example.com", size=5000)) == (
            b"action=452 4.2.2 Mailbox is full\n\n")
        writer.close()
    finally:
        servers[0].close()
        await store.close()


async def expect_closed_without_reply(reader: asyncio.StreamReader) -> None:
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_malformed_request_closes_without_reply(service):
    _store, host, port, _cfg = service
    for bad in (b"request=smtpd_access_policy\nno equals sign\n\n",
                b"protocol_state=RCPT\nrecipient=info@example.com\n\n",
                b"request=smtpd_access_policy\nsender=a\0b\n\n"):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(bad)
        await expect_closed_without_reply(reader)
        writer.close()
    # the good request before a bad one is answered, the bad one is not
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request("info@example.com") + b"garbage\n\n")
    assert await asyncio.wait_for(reader.read(), 5) == b"action=DUNNO\n\n"
    writer.close()


async def test_oversized_request_closes_without_reply(service):
    _store, host, port, _cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"request=smtpd_access_policy\nsender=" + b"a" * 5000)
    await expect_closed_without_reply(reader)
    writer.close()
    # and the server still serves
    reader, writer = await asyncio.open_connection(host, port)
    assert await ask(reader, writer, request("info@example.com")) == b"action=DUNNO\n\n"
    writer.close()


async def test_store_changes_are_seen_at_once(service):
    store, host, port, _cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    assert b"550 5.1.1" in await ask(reader, writer, request("new@example.com"))
    await store.create_mailbox("new@example.com")
    assert await ask(reader, writer, request("new@example.com")) == b"action=DUNNO\n\n"
    await store.update_mailbox("new@example.com", enabled=False)
    assert b"550 5.2.1" in await ask(reader, writer, request("new@example.com"))
    await store.update_domain("example.com", default_action="discard")
    assert await ask(reader, writer, request("gone@example.com")) == b"action=DUNNO\n\n"
    writer.close()


async def test_store_failure_answers_from_memory_or_fallback(service):
    store, host, port, cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    db = cfg.store_url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:  # break the store under the running service
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("ALTER TABLE mailboxes RENAME TO mailboxes_gone")
    # the service answers from its in-memory directory, which never asks the store
    assert await ask(reader, writer, request("other@example.com")) == (
        b"action=550 5.1.1 mailbox does not exist\n\n")
    assert await ask(reader, writer, request("a@elsewhere.example")) == b"action=DUNNO\n\n"
    writer.close()
    # straight over the broken store: the configured fallback
    from mailpolicy.maildir.reader import UsageReader
    from mailpolicy.policy.server import PolicyService

    direct = PolicyService(cfg.policy, store, UsageReader(cfg.maildir_root), 4096)
    [req] = Parser(4096).feed(request("other@example.com"))
    decision = await direct.answer(req)
    assert (decision.rule, decision.action) == (
        "fallback", "DEFER_IF_PERMIT 4.3.0 Service temporarily unavailable")


# ---- hypothesis: random input over a real socket never crashes the server and never gets a
# reply for a malformed request (a server in a thread, shared by all examples)

@pytest.fixture(scope="module")
def live_policy(tmp_path_factory) -> Iterator[tuple[str, int]]:
    cfg = make_config(tmp_path_factory.mktemp("policy"))
    with serving(cfg, start, cfg.listen.policy,
                 lambda store: populate(store, cfg.maildir_root)) as addr:
        yield addr


PIECES = [request("info@example.com"), request("nobody@example.com"), request("x@y.example"),
          b"request=smtpd_access_policy\n", b"recipient=a=b@example.com\n", b"\n", b"junk",
          b"=x\n", b"\0", b"\r\n", b"x" * 3000, b"protocol_state=RCPT\n"]


@fuzz_live_server(PIECES)
def test_random_input_never_crashes_and_malformed_gets_no_reply(live_policy, chunks):
    data = b"".join(chunks)
    parser = Parser(max_request=4096)
    good = parser.feed(data)
    out = exchange(live_policy, chunks)
    replies = out.split(b"\n\n")
    assert replies[-1] == b""  # nothing but whole replies
    replies = replies[:-1]
    assert all(r.startswith(b"action=") and b"\n" not in r for r in replies)
    # one reply per well-formed request, none for a malformed one (a reset may cut replies)
    assert len(replies) <= len(good)
    if parser.error is None:
        assert len(replies) == len(good)
    # the server is alive and well
    assert exchange(live_policy, [request("info@example.com")]) == b"action=DUNNO\n\n"


async def test_write_by_another_process_is_seen_quickly(service):
    _store, host, port, cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    assert b"550 5.1.1" in await ask(reader, writer, request("other@example.com"))
    second = await Store.open(cfg.store_url)  # another writer: does not bump our version
    try:
        await second.create_mailbox("other@example.com")
    finally:
        await second.close()
    await asyncio.sleep(0.3)
    assert await ask(reader, writer, request("other@example.com")) == b"action=DUNNO\n\n"
    writer.close()


async def test_idle_connection_is_closed(service, monkeypatch):
    import mailpolicy.policy.server as policy_server

    monkeypatch.setattr(policy_server, "IDLE_TIMEOUT", 0.3)
    _store, host, port, _cfg = service
    reader, writer = await asyncio.open_connection(host, port)
    for _ in range(4):  # activity keeps it open past the idle time
        await asyncio.sleep(0.15)
        assert await ask(reader, writer, request("info@example.com")) == b"action=DUNNO\n\n"
    await expect_closed_without_reply(reader)
    writer.close()


def eom_request(instance: str, size: int, recipient: str = "", state: str = "END-OF-MESSAGE",
                ) -> bytes:
    return (f"request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\n"
            f"client_address=192.0.2.1\nsender=s@example.net\nrecipient={recipient}\n"
            f"instance={instance}\nsize={size}\n\n").encode()


async def test_end_of_data_refuses_what_does_not_fit_without_size(service):
    """A client that announced no SIZE= passes RCPT; at END-OF-MESSAGE Postfix sends the real
    size (and no recipient when there are several): the recipients this connection let
    through in that transaction are checked, and the message refused in the session."""
    store, host, port, cfg = service
    await store.create_mailbox("big@example.com", max_size="100K")
    md = maildir_for(cfg.maildir_root, "example.com", "big")
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    (md / "new" / "1700000000.M1P1.host,S=50000").write_bytes(b"x" * 10)
    reader, writer = await asyncio.open_connection(host, port)
    dunno = b"action=DUNNO\n\n"
    # one recipient, fits; then too big
    assert await ask(reader, writer, eom_request("t1", 0, "big@example.com", "RCPT")) == dunno
    assert await ask(reader, writer, eom_request("t1", 10_000, "big@example.com")) == dunno
    assert await ask(reader, writer, eom_request("t2", 0, "big@example.com", "RCPT")) == dunno
    assert await ask(reader, writer, eom_request("t2", 60_000, "big@example.com")) == (
        b"action=552 5.2.2 Mailbox is full <big@example.com>\n\n")
    # two recipients (no `recipient` at END-OF-MESSAGE): the full one refuses the message
    for rcpt in ("x@ext.example", "big@example.com"):
        await ask(reader, writer, eom_request("t3", 0, rcpt, "RCPT"))
    assert (await ask(reader, writer, eom_request("t3", 60_000))).startswith(b"action=552 5.2.2")
    # a recipient refused at RCPT is not held against the message
    assert b"552" in await ask(reader, writer, eom_request("t4", 999_999, "big@example.com",
                                                          "RCPT"))
    await ask(reader, writer, eom_request("t4", 0, "x@ext.example", "RCPT"))
    assert await ask(reader, writer, eom_request("t4", 999_999)) == dunno
    writer.close()
