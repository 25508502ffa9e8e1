"""The content filter over real sockets: a real store, the filter, and an aiosmtpd next hop."""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope

from mailpolicy import config
from mailpolicy.core.srs import Srs
from mailpolicy.smtp.server import start
from mailpolicy.store import Store

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the next hop (a sink)
@dataclass
class Got:
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes
    xforward: dict[str, str]


@dataclass
class Sink:
    """Stands in for Postfix's 10026 smtpd: records what arrives; can refuse or stall."""

    messages: list[Got] = field(default_factory=list)
    xforward_keyword: str = "XFORWARD NAME ADDR PROTO HELO"
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str | None = None
    delay: float = 0.0
    server: asyncio.AbstractServer | None = None
    port: int = 0
    xforward_seen: list[str] = field(default_factory=list)
    connections: int = 0  # sessions opened to this sink
    open_sessions: list[Any] = field(default_factory=list)


class SinkSMTP(SMTP):
    line_length_limit = 64 * 1024

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        super().__init__(SinkHandler(sink), hostname="sink.test", enable_SMTPUTF8=True,
                         data_size_limit=64 * 1024 * 1024)

    def _create_envelope(self) -> Envelope:
        env = Envelope()
        env.xforward = {}  # type: ignore[attr-defined]
        return env

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sink.connections += 1
        self.sink.open_sessions.append(transport)
        super().connection_made(transport)

    async def smtp_XFORWARD(self, arg: str) -> None:
        self.sink.xforward_seen.append(arg)
        for item in arg.split():
            k, _, v = item.partition("=")
            self.envelope.xforward[k] = v  # type: ignore[union-attr]
        await self.push("250 2.0.0 Ok")


class SinkHandler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        extra = [f"250-{self.sink.xforward_keyword}"] if self.sink.xforward_keyword else []
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_RCPT(self, server: Any, session: Any, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if address in self.sink.refuse_rcpt:
            return self.sink.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        if self.sink.data_reply:
            return self.sink.data_reply
        self.sink.messages.append(Got(envelope.mail_from or "", list(envelope.mail_options),
                                      list(envelope.rcpt_tos), envelope.original_content or b"",
                                      dict(envelope.xforward)))  # type: ignore[attr-defined]
        return f"250 2.0.0 Ok: queued as Q{len(self.sink.messages)}"


async def start_sink(sink: Sink, port: int = 0) -> Sink:
    loop = asyncio.get_running_loop()
    sink.server = await loop.create_server(lambda: SinkSMTP(sink), HOST, port)
    sink.port = sink.server.sockets[0].getsockname()[1]
    return sink


# ---------------------------------------------------------------- fixtures
@dataclass
class Env:
    store: Store
    sink: Sink
    port: int
    cfg: config.Config
    servers: list[asyncio.AbstractServer]


async def make_env(tmp_path: Path, sink: Sink, size_limit: str = "20M",
                   **filter_opts: Any) -> Env:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'mp.db'}")
    port = free_port()
    reinject = {"host": HOST, "port": sink.port, "timeout_seconds": 2.0}
    reinject.update(filter_opts.pop("reinject", {}))
    limits = {"message_size_limit": size_limit, **filter_opts.pop("limits", {})}
    cfg = config.from_dict({
        "paths": {"state_dir": str(tmp_path)},
        "listen": {"filter": f"{HOST}:{port}"},
        "reinject": reinject,
        "limits": limits,
        "filter": {"hostname": "mx.ours.test", "srs_domain": "fwd.ours.test", **filter_opts},
    })
    servers = await start(cfg, store)
    return Env(store, sink, port, cfg, servers)


async def close_env(env: Env) -> None:
    for s in env.servers:
        s.close()
    if env.sink.server is not None:
        env.sink.server.close()
    await env.store.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    sink = await start_sink(Sink())
    e = await make_env(tmp_path, sink)
    await provision(e.store)
    yield e
    await close_env(e)


async def provision(store: Store) -> None:
    await store.create_domain("ours.test")
    await store.create_domain("discard.test", default_action="discard")
    await store.create_mailbox("bob@ours.test", aliases=["info", "sales"])
    await store.create_mailbox("boss@ours.test")  # before a redirect may go there
    await store.create_domain("red.test", default_action="redirect", redirect_to="boss@ours.test")
    await store.create_domain("old.test", default_action="redirect-domain",
                              redirect_to="ours.test")
    await store.create_mailbox("dave@ours.test")  # before a copy may go there
    await store.create_mailbox("carol@ours.test", copies_to=["dave", "ext@remote.test"])
    await store.create_mailbox("gone@ours.test", copies_to=["away@remote.test"], no_save=True)


# ---------------------------------------------------------------- a Postfix-like client
MSG = (b"From: Alice <alice@sender.test>\r\nTo: bob@ours.test\r\nSubject: hi\r\n"
       b"Message-ID: <1@sender.test>\r\n\r\nHello\r\n.leading dot\r\n")


async def send(port: int, rcpts: list[str], data: bytes = MSG, sender: str = "alice@sender.test",
               xforward: list[str] | None = None, options: tuple[str, ...] = ("BODY=8BITMIME",),
               ) -> tuple[int, str]:
    """Send one message the way Postfix's smtp client does; the final reply."""
    client = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=10, local_hostname="postfix.test",
                             start_tls=False)
    await client.connect()
    await client.ehlo()
    try:
        for line in xforward or []:
            r = await client.execute_command(b"XFORWARD", line.encode())
            assert r.code == 250, r
        r = await client.execute_command(b"MAIL", f"FROM:<{sender}>".encode(),
                                         *(o.encode() for o in options))
        if r.code != 250:
            return r.code, r.message
        for rc in rcpts:
            r = await client.execute_command(b"RCPT", f"TO:<{rc}>".encode())
            assert r.code == 250, r
        try:
            r = await client.data(data)
        except aiosmtplib.SMTPDataError as e:
            return e.code, e.message
        return r.code, r.message
    finally:
        client.close()


def body_of(got: Got) -> bytes:
    """The message minus the headers the filter prepended (trace, Authentication-Results)."""
    data = got.content
    while m := re.match(rb"(?:X-Mailpolicy-Trace|Authentication-Results):.*?\r\n(?![ \t])",
                        data, re.DOTALL):
        data = data[m.end():]
    return data


# ---------------------------------------------------------------- recipient rewriting
async def test_alias_delivers_to_its_mailbox(env: Env) -> None:
    code, text = await send(env.port, ["info@ours.test"])
    assert code == 250
    assert text == "2.0.0 Ok: queued as Q1"  # the next hop's status is not repeated
    [got] = env.sink.messages
    assert got.rcpt_tos == ["bob@ours.test"] and got.mail_from == "alice@sender.test"
    assert body_of(got) == MSG and b"\r\nX-Mailpolicy-Trace: by mx.ours.test;" in (
        b"\r\n" + got.content)


async def test_copies_local_and_external_with_srs_and_dedup(env: Env) -> None:
    code, text = await send(env.port, ["carol@ours.test", "dave@ours.test", "bob@ours.test"])
    assert code == 250, text
    local, external = env.sink.messages
    assert local.mail_from == "alice@sender.test"
    assert local.rcpt_tos == ["carol@ours.test", "dave@ours.test", "bob@ours.test"]
    srs = Srs.from_config(env.cfg)
    assert external.rcpt_tos == ["ext@remote.test"]
    assert external.mail_from.startswith("SRS0=") and external.mail_from.endswith(
        "@fwd.ours.test")
    assert srs.reverse(external.mail_from) == "alice@sender.test"
    assert b"forwarded=<carol@ours.test>" in external.content
    assert body_of(local) == body_of(external) == MSG


async def test_external_copy_of_local_sender_keeps_sender(env: Env) -> None:
    code, _ = await send(env.port, ["carol@ours.test"], sender="bob@ours.test")
    assert code == 250
    [got] = env.sink.messages  # one envelope: no SRS needed for our own domain
    assert got.mail_from == "bob@ours.test"
    assert got.rcpt_tos == ["carol@ours.test", "dave@ours.test", "ext@remote.test"]


async def test_null_sender_copies_keep_null_sender(env: Env) -> None:
    code, _ = await send(env.port, ["carol@ours.test"], sender="")
    assert code == 250
    [got] = env.sink.messages
    assert got.mail_from == "<>" and "ext@remote.test" in got.rcpt_tos


async def test_do_not_save_sends_only_copies(env: Env) -> None:
    code, _ = await send(env.port, ["gone@ours.test"])
    assert code == 250
    [got] = env.sink.messages
    assert got.rcpt_tos == ["away@remote.test"] and got.mail_from.startswith("SRS0=")


async def test_unknown_in_discard_domain_is_removed(env: Env) -> None:
    assert (await send(env.port, ["nobody@discard.test", "bob@ours.test"]))[0] == 250
    assert env.sink.messages[0].rcpt_tos == ["bob@ours.test"]
    code, text = await send(env.port, ["nobody@discard.test"])
    assert code == 250 and "dropped" in text and len(env.sink.messages) == 1


async def test_redirect_and_redirect_domain(env: Env) -> None:
    assert (await send(env.port, ["whoever@red.test"]))[0] == 250
    assert (await send(env.port, ["sales@old.test"]))[0] == 250  # alias in the target domain
    # unknown there (a reject domain): refused at RCPT by the policy service; here (the
    # directory changed after RCPT) the message is deferred, never dropped nor bounced
    code, text = await send(env.port, ["ghost@old.test", "bob@ours.test"])
    assert code == 451 and "<ghost@old.test>" in text
    a, b = env.sink.messages
    assert a.rcpt_tos == ["boss@ours.test"]
    assert b.rcpt_tos == ["bob@ours.test"]


async def test_foreign_recipient_unchanged(env: Env) -> None:
    assert (await send(env.port, ["Someone@Remote.test"], sender="bob@ours.test"))[0] == 250
    [got] = env.sink.messages
    assert got.rcpt_tos == ["Someone@Remote.test"] and got.mail_from == "bob@ours.test"


async def test_bounce_to_srs_address_goes_back_to_sender(env: Env) -> None:
    srs = Srs.from_config(env.cfg)
    address = srs.forward("alice@sender.test")
    assert address
    assert (await send(env.port, [address], sender=""))[0] == 250
    assert env.sink.messages[0].rcpt_tos == ["alice@sender.test"]
    forged = "SRS0=AAAA=AB=sender.test=alice@fwd.ours.test"
    code, text = await send(env.port, [forged], sender="")
    assert code == 250 and "dropped" in text and len(env.sink.messages) == 1


async def test_loop_guard_trace_header_stops_second_forward(env: Env) -> None:
    looped = (b"X-Mailpolicy-Trace: by elsewhere.test; id=1; forwarded=<carol@ours.test>\r\n"
              + MSG)
    assert (await send(env.port, ["carol@ours.test"], data=looped))[0] == 250
    [got] = env.sink.messages
    assert got.rcpt_tos == ["carol@ours.test"]  # delivered locally, copies not sent again
    gone = b"Delivered-To: gone@ours.test\r\n" + MSG
    assert (await send(env.port, ["gone@ours.test"], data=gone))[0] == 250
    assert env.sink.messages[1].rcpt_tos == ["gone@ours.test"]  # kept, never lost


async def test_too_many_passes_deferred(env: Env) -> None:
    trace = b"".join(b"X-Mailpolicy-Trace: by mx.ours.test; id=%d\r\n" % i for i in range(5))
    code, text = await send(env.port, ["bob@ours.test"], data=trace + MSG)
    assert code == 451 and "loop" in text.lower() and not env.sink.messages


# ---------------------------------------------------------------- XFORWARD
XF = ["NAME=mx.sender.test ADDR=192.0.2.10 PORT=4711",
      "PROTO=ESMTP HELO=helo+2Bname.sender.test IDENT=ABC123 SOURCE=REMOTE"]


async def test_xforward_relayed_only_announced_and_reset(env: Env) -> None:
    assert (await send(env.port, ["bob@ours.test"], xforward=XF))[0] == 250
    got = env.sink.messages[0]
    assert got.xforward == {"NAME": "mx.sender.test", "ADDR": "192.0.2.10", "PROTO": "ESMTP",
                            "HELO": "helo+2Bname.sender.test"}  # xtext kept on the wire
    assert all("IDENT" not in s and "PORT" not in s for s in env.sink.xforward_seen)


async def test_xforward_rules_on_one_connection(env: Env) -> None:
    client = aiosmtplib.SMTP(hostname=HOST, port=env.port, timeout=10, start_tls=False,
                             local_hostname="postfix.test")
    await client.connect()
    await client.ehlo()
    try:
        ehlo = client.last_ehlo_response
        assert ehlo is not None
        for kw in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                   f"SIZE {env.cfg.internal_size_limit}",
                   "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"):
            assert kw in ehlo.message
        assert (await client.execute_command(b"XFORWARD", b"ADDR=192.0.2.1")).code == 250
        assert (await client.execute_command(b"XFORWARD", b"BOGUS=1")).code == 501
        await client.execute_command(b"MAIL", b"FROM:<a@sender.test>")
        r = await client.execute_command(b"XFORWARD", b"ADDR=192.0.2.2")
        assert r.code == 503 and r.message.startswith("5.5.1")
        await client.execute_command(b"RCPT", b"TO:<bob@ours.test>")
        await client.data(MSG)
        # after the message: attributes are gone
        await client.execute_command(b"MAIL", b"FROM:<a@sender.test>")
        await client.execute_command(b"RCPT", b"TO:<bob@ours.test>")
        await client.data(MSG)
        # after RSET too
        await client.execute_command(b"XFORWARD", b"ADDR=192.0.2.3")
        assert (await client.execute_command(b"RSET")).code == 250
        await client.execute_command(b"MAIL", b"FROM:<a@sender.test>")
        await client.execute_command(b"RCPT", b"TO:<bob@ours.test>")
        await client.data(MSG)
    finally:
        client.close()
    first, second, third = env.sink.messages
    assert first.xforward == {"ADDR": "192.0.2.1"}
    assert second.xforward == {} and third.xforward == {}


async def test_xforward_refused_from_unauthorised_client(tmp_path: Path) -> None:
    sink = await start_sink(Sink())
    e = await make_env(tmp_path, sink, authorized_xforward=["10.0.0.0/8"])
    try:
        client = aiosmtplib.SMTP(hostname=HOST, port=e.port, timeout=10, start_tls=False)
        await client.connect()
        await client.ehlo()
        assert client.last_ehlo_response is not None
        assert "XFORWARD" not in client.last_ehlo_response.message
        r = await client.execute_command(b"XFORWARD", b"ADDR=192.0.2.1")
        assert r.code == 550 and r.message.startswith("5.7.0")
        client.close()
    finally:
        await close_env(e)


async def test_next_hop_without_xforward_gets_none(tmp_path: Path) -> None:
    sink = await start_sink(Sink(xforward_keyword=""))
    e = await make_env(tmp_path, sink)
    try:
        await e.store.create_domain("ours.test")
        await e.store.create_mailbox("bob@ours.test")
        assert (await send(e.port, ["bob@ours.test"], xforward=XF))[0] == 250
        assert sink.xforward_seen == [] and len(sink.messages) == 1
    finally:
        await close_env(e)


# ---------------------------------------------------------------- next hop failures
async def test_next_hop_down_answers_4xx_then_delivers_on_retry(tmp_path: Path) -> None:
    port = free_port()
    sink = Sink()
    sink.port = port
    e = await make_env(tmp_path, sink)
    try:
        await e.store.create_domain("ours.test")
        await e.store.create_mailbox("bob@ours.test")
        code, text = await send(e.port, ["bob@ours.test"])
        assert code == 451 and text.startswith("4.4.1"), text
        await start_sink(sink, port)  # the next hop comes back: the retry delivers
        assert (await send(e.port, ["bob@ours.test"]))[0] == 250
        assert len(sink.messages) == 1 and body_of(sink.messages[0]) == MSG
    finally:
        await close_env(e)


async def test_next_hop_slow_answers_4xx(tmp_path: Path) -> None:
    sink = await start_sink(Sink(delay=5))
    e = await make_env(tmp_path, sink, reinject={"timeout_seconds": 0.5})
    try:
        code, text = await send(e.port, ["x@remote.test"])
        assert code == 451 and text.startswith("4.4.2")
    finally:
        await close_env(e)


async def test_next_hop_refusing(env: Env) -> None:
    env.sink.refuse_rcpt["dave@ours.test"] = "550 5.1.1 <dave@ours.test>: unknown"
    code, text = await send(env.port, ["carol@ours.test"])
    assert code == 451 and "dave@ours.test" in text  # after-queue: kept queued, not bounced
    assert env.sink.messages == []  # nothing partially delivered
    env.sink.refuse_rcpt.clear()
    env.sink.data_reply = "554 5.6.0 content rejected"
    code, text = await send(env.port, ["bob@ours.test"])
    assert code == 554 and "content rejected" in text
    env.sink.data_reply = "452 4.3.1 Insufficient system storage"
    assert (await send(env.port, ["bob@ours.test"]))[0] == 452


async def test_before_queue_relays_5xx_and_one_message_per_connection(tmp_path: Path) -> None:
    sink = await start_sink(Sink(refuse_rcpt={"x@remote.test": "550 5.7.1 relay denied"}))
    e = await make_env(tmp_path, sink, mode="before-queue")
    try:
        code, text = await send(e.port, ["x@remote.test"])
        assert code == 550 and text.startswith("5.7.1")
        client = aiosmtplib.SMTP(hostname=HOST, port=e.port, timeout=10, start_tls=False)
        await client.connect()
        await client.ehlo()
        await client.execute_command(b"MAIL", b"FROM:<a@sender.test>")
        await client.execute_command(b"RCPT", b"TO:<y@remote.test>")
        assert (await client.data(MSG)).code == 250
        assert (await client.execute_command(b"MAIL", b"FROM:<a@sender.test>")).code == 503
        client.close()
    finally:
        await close_env(e)


async def test_before_queue_sessions_reuse_idle_next_hop_connections(tmp_path: Path) -> None:
    """Before-queue mode has one filter session per message: the next-hop connection is kept
    for the next session (no connect/EHLO/QUIT per message), XFORWARD is sent again for each
    message, and a kept connection the next hop has closed meanwhile is replaced."""
    sink = await start_sink(Sink())
    e = await make_env(tmp_path, sink, mode="before-queue")
    try:
        await provision(e.store)
        for n in range(3):
            code, text = await send(e.port, ["bob@ours.test"],
                                    xforward=[f"NAME=mx{n}.sender.test ADDR=192.0.2.{n + 1}"])
            assert code == 250, text
        assert sink.connections == 1, sink.connections
        assert [m.xforward.get("ADDR") for m in sink.messages] == [
            "192.0.2.1", "192.0.2.2", "192.0.2.3"]
        for transport in sink.open_sessions:  # the next hop drops the idle kept connection
            transport.close()
        await asyncio.sleep(0.05)
        code, text = await send(e.port, ["bob@ours.test"])
        assert code == 250, text
        assert len(sink.messages) == 4 and sink.connections == 2
    finally:
        await close_env(e)


# ---------------------------------------------------------------- transparency
async def test_bodies_byte_identical_8bit_binaryish_long_lines(env: Env) -> None:
    rng = random.Random(6)
    eight = MSG.replace(b"Hello", "Grüße, ℌ, 日本語 \xff".encode("utf-8", "surrogateescape"))
    # binary-ish: every byte value except CR/LF inside lines, dot-leading lines, NULs
    lines = [bytes(rng.choice([b for b in range(256) if b not in (10, 13)])
                   for _ in range(rng.randint(0, 990))) for _ in range(300)]
    lines += [b".", b"..", b". x", b"\x00\x00", b"x" * 5000]
    binaryish = b"Subject: bin\r\nContent-Type: application/octet-stream\r\n\r\n" + b"".join(
        line + b"\r\n" for line in lines)
    odd_mime = (b"Content-Type: multipart/mixed; boundary=\"=_x\"\r\n\r\n--=_x\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n\xe9t\xe9\r\n--=_x--   \r\n\r\n\r\n")
    for data in (eight, binaryish, odd_mime, b"\r\nno headers at all\r\n"):
        code, text = await send(env.port, ["bob@ours.test"], data=data)
        assert code == 250, text
        assert body_of(env.sink.messages[-1]) == data


async def test_ten_megabyte_message_byte_identical(env: Env) -> None:
    line = bytes(range(32, 127)) + b"\r\n"
    data = b"Subject: big\r\n\r\n" + line * (10 * 1024 * 1024 // len(line))
    code, text = await send(env.port, ["bob@ours.test"], data=data)
    assert code == 250, text
    got = env.sink.messages[-1]
    assert body_of(got) == data and b"SIZE=%d" % len(got.content) in " ".join(
        got.mail_options).encode()


async def test_smtputf8_and_size_parameters_passed(env: Env) -> None:
    code, _ = await send(env.port, ["bob@ours.test"], sender="jörg@sender.test",
                         options=("SIZE=300", "BODY=8BITMIME", "SMTPUTF8"))
    assert code == 250
    got = env.sink.messages[-1]
    assert got.mail_from == "jörg@sender.test"
    assert {"BODY=8BITMIME", "SMTPUTF8"} <= set(got.mail_options)


async def test_bare_lf_refused_and_size_limit(env: Env) -> None:
    # raw bytes: aiosmtplib would turn a bare LF into CRLF on the way
    r, w = await asyncio.open_connection(HOST, env.port)
    await r.readline()
    w.write(b"EHLO t\r\n")
    await w.drain()
    while not (await r.readline()).startswith(b"250 "):
        pass
    w.write(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\n")  # pipelined
    await w.drain()
    replies = [await r.readline() for _ in range(3)]
    assert replies[0].startswith(b"250 2.") and replies[2].startswith(b"354")
    w.write(b"Subject: x\r\n\r\nbare\nlf and bare\rcr\r\n.\r\n")
    await w.drain()
    assert (await r.readline()).startswith(b"550 5.5.2")
    w.write(b"MAIL FROM:<a@sender.test> SIZE=99999999\r\n")
    await w.drain()
    assert (await r.readline()).startswith(b"552 5.3.4")
    w.write(b"QUIT\r\n")
    await w.drain()
    assert (await r.readline()).startswith(b"221")
    w.close()
    assert env.sink.messages == []


async def raw_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client after EHLO (aiosmtplib would rewrite bare LFs and refuse odd commands)."""
    r, w = await asyncio.open_connection(HOST, port)
    await r.readline()
    w.write(b"EHLO postfix.test\r\n")
    await w.drain()
    while not (await r.readline()).startswith(b"250 "):
        pass
    return r, w


async def test_data_over_the_limit_552_then_session_goes_on(tmp_path: Path) -> None:
    sink = await start_sink(Sink())
    e = await make_env(tmp_path, sink, size_limit="1000")
    await provision(e.store)
    try:
        limit = e.cfg.internal_size_limit
        r, w = await raw_session(e.port)
        w.write(b"XFORWARD NAME=spike.test ADDR=192.0.2.1\r\n"
                b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\n")
        await w.drain()
        got = [await r.readline() for _ in range(4)]
        assert got[3].startswith(b"354"), got
        # one endless line, then normal lines: either way only the end is looked for
        w.write(b"x" * (limit + 10) + b"\r\n" + b"y\r\n" * 10 + b".\r\n"
                b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@ours.test>\r\nDATA\r\n")
        await w.drain()
        got = [await r.readline() for _ in range(4)]
        assert got[0].startswith(b"552 5.3.4") and got[1].startswith(b"250 2."), got
        assert got[3].startswith(b"354"), got
        w.write(b"Subject: ok\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
        await w.drain()
        assert (await r.readline()).startswith(b"250 2."), "second message accepted"
        assert (await r.readline()).startswith(b"221")
        w.close()
        assert len(sink.messages) == 1
        assert body_of(sink.messages[0]) == b"Subject: ok\r\n\r\n.dot\r\n"
        assert sink.messages[0].xforward.get("NAME") != "spike.test"  # reset after the 552
    finally:
        await close_env(e)


async def test_data_command_errors_have_enhanced_codes(env: Env) -> None:
    r, w = await raw_session(env.port)
    w.write(b"DATA\r\nMAIL FROM:<a@sender.test>\r\nDATA\r\nRCPT TO:<bob@ours.test>\r\n"
            b"DATA x\r\nQUIT\r\n")
    await w.drain()
    got = [await r.readline() for _ in range(6)]
    assert got[0].startswith(b"503 5.5.1") and got[2].startswith(b"503 5.5.1"), got
    assert got[4].startswith(b"501 5.5.4") and got[5].startswith(b"221"), got
    w.close()


async def test_lines_near_the_read_step_pass_byte_identical(env: Env) -> None:
    # the reader's step is 64 KB; dot lines and dots around it (the sink takes < 64 KB lines)
    data = b"Subject: long\r\n\r\n" + b"".join(
        b"." * n + b"\r\n" + b".z" * 30_000 + b".\r\n" for n in range(1, 8))
    code, text = await send(env.port, ["bob@ours.test"], data=data)
    assert code == 250, text
    assert body_of(env.sink.messages[-1]) == data


async def test_do_not_save_mailbox_autoreplies_from_the_filter(env: Env) -> None:
    """A forward-only mailbox never reaches LMTP, so the filter answers for it: one reply with
    a null envelope sender to the original sender, once per interval."""
    await env.store.autoreplies.set("gone@ours.test", enabled=True, message="Away",
                                      subject="Away")
    msg = MSG.replace(b"To: bob@ours.test", b"To: gone@ours.test")
    for _ in range(2):
        code, _ = await send(env.port, ["gone@ours.test"], msg)
        assert code == 250
    replies = [m for m in env.sink.messages if m.mail_from in ("", "<>")]
    forwarded = [m for m in env.sink.messages if m.mail_from not in ("", "<>")]
    assert len(forwarded) == 2 and all(m.rcpt_tos == ["away@remote.test"] for m in forwarded)
    assert len(replies) == 1 and replies[0].rcpt_tos == ["alice@sender.test"]
    assert b"Auto-Submitted: auto-replied" in replies[0].content


async def test_client_closing_between_commands_is_a_normal_end(env: Env) -> None:
    """The reader at EOF between two commands (Postfix dropping an idle cached connection):
    the session ends, closed by us, and nothing is logged as an error."""
    from structlog.testing import capture_logs

    from mailpolicy.smtp.server import Filter, FilterSMTP

    loop = asyncio.get_running_loop()
    flt = Filter(env.cfg, env.store)
    sessions: list[FilterSMTP] = []

    def session() -> FilterSMTP:
        sessions.append(FilterSMTP(flt, loop=loop))
        return sessions[-1]

    server = await loop.create_server(session, HOST, 0)
    try:
        reader, writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
        await reader.readline()
        writer.write(b"EHLO postfix.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        with capture_logs() as logs:
            sessions[0]._reader.feed_eof()  # what the session's reader sees when Postfix closes
            rest = await asyncio.wait_for(reader.read(), 5)  # we close: EOF, not a hang
            await asyncio.sleep(0.05)
        writer.close()
        assert b"451" not in rest
        assert [e["event"] for e in logs if e["log_level"] == "error"] == []
        assert "filter.client_closed" in [e["event"] for e in logs]
    finally:
        server.close()
