"""Socketmap tables over real sockets with a real Store on a temp SQLite file."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from threaded import exchange, fuzz_live_server, serving

from mailpolicy import config
from mailpolicy.core.outbound import transport_name
from mailpolicy.socketmap import start
from mailpolicy.socketmap.protocol import Parser, encode_query
from mailpolicy.store import Store

IP = "192.0.2.7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(tmp: Path) -> config.Config:
    return config.from_dict({
        "paths": {"state_dir": str(tmp)},
        "listen": {"socketmap": f"127.0.0.1:{free_port()}"},
        "outbound": {"ip_pool": [IP]},
        "filter": {"srs_domain": "mx.example.test"},
        "limits": {"socketmap_request_max": 2048},
    })


async def populate(store: Store) -> None:
    await store.create_domain("example.com", outbound_ip=IP)
    await store.create_domain("discard.example", default_action="discard")
    await store.create_mailbox("info@example.com", aliases=["sales"])


@pytest.fixture
async def service(tmp_path):
    cfg = make_config(tmp_path)
    store = await Store.open(cfg.store_url, ip_pool=cfg.outbound.ip_pool)
    await populate(store)
    servers = await start(cfg, store)
    yield store, config.split_hostport(cfg.listen.socketmap), cfg
    for s in servers:
        s.close()
        await s.wait_closed()
    await store.close()


async def read_netstring(reader: asyncio.StreamReader) -> bytes:
    length = int((await asyncio.wait_for(reader.readuntil(b":"), 5))[:-1])
    data = await asyncio.wait_for(reader.readexactly(length + 1), 5)
    assert data.endswith(b",")
    return data[:-1]


async def test_maps_on_one_persistent_connection(service):
    _store, addr, _cfg = service
    reader, writer = await asyncio.open_connection(*addr)
    cases = [
        ("domains", "example.com", b"OK example.com"),
        ("domains", "Example.COM", b"OK example.com"),
        ("domains", "elsewhere.example", b"NOTFOUND "),
        ("mailboxes", "info@example.com", b"OK info@example.com"),
        ("mailboxes", "Sales+x@example.com", b"OK info@example.com"),
        ("mailboxes", "nobody@example.com", b"NOTFOUND "),
        ("mailboxes", "nobody@discard.example", b"OK nobody@discard.example"),
        ("mailboxes", "@discard.example", b"NOTFOUND "),
        ("mailboxes", "example.com", b"NOTFOUND "),
        ("sender-transport", "info@example.com", f"OK {transport_name(IP)}:".encode()),
        ("sender-transport", "x@elsewhere.example", b"NOTFOUND "),
        ("nosuchmap", "x", b"TEMP no such map: nosuchmap"),
    ]
    for name, key, reply in cases:
        writer.write(encode_query(name, key))
        assert await read_netstring(reader) == reply, (name, key)
    # byte at a time
    data = encode_query("mailboxes", "info@example.com")
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
    assert await read_netstring(reader) == b"OK info@example.com"
    # pipelined
    writer.write(b"".join(encode_query(n, k) for n, k, _ in cases))
    assert [await read_netstring(reader) for _ in cases] == [r for _, _, r in cases]
    writer.close()


async def test_changes_are_seen_at_once(service):
    store, addr, _cfg = service
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(encode_query("mailboxes", "new@example.com"))
    assert await read_netstring(reader) == b"NOTFOUND "
    await store.create_mailbox("new@example.com")
    writer.write(encode_query("mailboxes", "new@example.com"))
    assert await read_netstring(reader) == b"OK new@example.com"
    writer.close()


async def test_framing_error_temp_and_close(service):
    _store, addr, _cfg = service
    for bad in (b"abc:", b"5000:", b"3:abc;"):
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(bad)
        assert await read_netstring(reader) == b"TEMP malformed netstring"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_store_failure_answers_from_memory_or_temp(service):
    store, addr, cfg = service
    db = cfg.store_url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("ALTER TABLE domains RENAME TO domains_gone")
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(encode_query("domains", "example.com"))  # from memory: the store is not asked
    assert await read_netstring(reader) == b"OK example.com"
    writer.close()
    from mailpolicy.socketmap.protocol import netstring
    from mailpolicy.socketmap.server import SocketmapService

    direct = SocketmapService(store, 2048)  # straight over the broken store: TEMP
    assert (await direct.answer(b"domains other.example")).encode() == netstring(
        b"TEMP lookup failed")


@pytest.fixture(scope="module")
def live_socketmap(tmp_path_factory) -> Iterator[tuple[str, int]]:
    cfg = make_config(tmp_path_factory.mktemp("socketmap"))
    with serving(cfg, start, cfg.listen.socketmap, populate, cfg.outbound.ip_pool) as addr:
        yield addr


PIECES = [encode_query("mailboxes", "info@example.com"), encode_query("domains", "example.com"),
          encode_query("x", "y"), b"0:,", b"9999:", b"3:", b"abc", b",", b":", b"12"]


@fuzz_live_server(PIECES)
def test_random_input_never_crashes(live_socketmap, chunks):
    data = b"".join(chunks)
    parser = Parser(max_request=2048)
    payloads = parser.feed(data)
    out = exchange(live_socketmap, chunks)
    replies = Parser(max_request=200_000)
    got = replies.feed(out)
    assert replies.error is None and replies.idle  # only whole, well-formed netstrings
    assert all(g.split(b" ", 1)[0] in (b"OK", b"NOTFOUND", b"TEMP") for g in got)
    assert len(got) <= len(payloads) + 1
    if parser.error is None:
        assert len(got) == len(payloads)
    assert exchange(live_socketmap, [encode_query("domains", "example.com")]) == (
        b"14:OK example.com,")
