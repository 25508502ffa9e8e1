"""Mail that leaves, end to end with published DNS: a user's submitted mail leaves from the
domain's outbound IP with a DKIM signature that verifies against the selector mailpolicy
published by RFC 2136 (Knot DNS on loopback); an autoreply is DKIM-signed; a copy forwarded to
another domain carries an ARC set that dkimpy verifies and an SRS return path on the FQDN; the
copy and the autoreply leave from the domain's outbound IP too (routed reinjection), while a
local copy still lands in its Maildir."""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest
from aiosmtpd.controller import Controller
from harness import Stack, free_port, make_message
from harness_servers import HOSTNAME

from mailpolicy.cli.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from test_dmarc_publish import SECRET, knot_server

ZONE = "out-e2e.test"
EXT = "remote-ext.example"
PASSWORD = "correct horse battery staple"


class Sink:
    """The relay host standing in for the remote MX: what arrives, and from which address."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], bytes, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                         envelope.original_content, session.peer[0]))
        return "250 2.0.0 Ok: remote"

    def wait(self, rcpt: str, timeout: float = 30) -> tuple[str, list[str], bytes, str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.got:
                if rcpt in m[1]:
                    return m
            time.sleep(0.1)
        raise AssertionError(f"nothing for {rcpt} at the remote stand-in: {self.got!r}")


@pytest.fixture(scope="module")
def world(stack_factory) -> Iterator[tuple[Stack, Sink, int]]:
    d = Path(tempfile.mkdtemp(prefix="mailpolicy-e2e-knot-"))
    sink = Sink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        with knot_server(d, ZONE) as knot:
            stack = stack_factory(
                mailpolicy={"outbound": {"ip_pool": ["127.0.0.1", "127.0.0.2"]},
                            "dns": {"nameservers": [f"127.0.0.1:{knot}"],
                                    "timeout_seconds": 2.0},
                            "dmarc": {"update_server": f"127.0.0.1:{knot}",
                                      "update_zone": ZONE, "tsig_name": "mp-key",
                                      "tsig_secret": SECRET}},
                # the stand-in is the relay host of user mail and the next hop of the
                # routed reinjection's filters (a content_filter without next hop ignores
                # relayhost: README says to set default_filter_nexthop with a relayhost)
                main_cf={"relayhost": f"[127.0.0.1]:{port}",
                         "default_filter_nexthop": f"[127.0.0.1]:{port}"})
            yield stack, sink, knot
    finally:
        ctl.stop()


def published(knot: int):
    """dkimpy's dnsfunc over the test DNS server (what receivers would look up)."""
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = ["127.0.0.1"], knot
        try:
            ans = r.resolve(name.decode(), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(rd.strings) for rd in ans)
    return lookup


def _setup(stack: Stack, **mailboxes: dict[str, Any]) -> str:
    domain = f"s{uuid.uuid4().hex[:8]}.{ZONE}"
    api = Client(str(stack.cfg.admin_socket))
    res = api.call("POST", "/v1/domains", {"name": domain, "outbound_ip": "127.0.0.2"})
    assert "dns_update" not in res or res["dns_update"]["ok"], res
    for name, fields in mailboxes.items():
        api.call("POST", "/v1/mailboxes", {"address": f"{name}@{domain}", **fields})
    return domain


def test_submitted_mail_is_signed_and_leaves_from_the_domain_ip(world) -> None:
    stack, sink, knot = world
    domain = _setup(stack, alice={"password": PASSWORD})
    alice = f"alice@{domain}"
    keys = Client(str(stack.cfg.admin_socket)).call("GET", f"/v1/domains/{domain}/dkim")["keys"]
    assert [k["algorithm"] for k in keys] == ["rsa"] and keys[0]["signing"]
    rcpt = f"r{uuid.uuid4().hex[:6]}@{EXT}"
    with stack.submit(alice, PASSWORD) as s:
        assert s.sendmail(alice, [rcpt], make_message(alice, rcpt, "signed")) == {}
    sender, _rcpts, content, peer = sink.wait(rcpt)
    assert sender == alice and peer == "127.0.0.2"
    assert content.startswith(b"DKIM-Signature:") or b"\nDKIM-Signature:" in content
    assert f"d={domain}".encode() in content and f"s={keys[0]['selector']}".encode() in content
    assert dkim.verify(content, dnsfunc=published(knot)), content[:600]


def test_autoreply_is_signed_and_leaves_from_the_domain_ip(world) -> None:
    stack, sink, knot = world
    domain = _setup(stack, away={"password": PASSWORD})
    away = f"away@{domain}"
    Client(str(stack.cfg.admin_socket)).call(
        "PUT", f"/v1/mailboxes/{away}/autoresponder", {"enabled": True, "message": "Away."})
    friend = f"friend{uuid.uuid4().hex[:6]}@{EXT}"
    assert stack.send(friend, away, make_message(friend, away, "are you there")) == {}
    sender, _rcpts, content, peer = sink.wait(friend)
    assert sender in ("", "<>")  # an autoreply (RFC 3834: null return path)
    assert peer == "127.0.0.2"  # the routed reinjection of the domain's outbound IP
    assert b"Auto-Submitted: auto-replied" in content
    assert dkim.verify(content, dnsfunc=published(knot)), content[:600]


def test_forwarded_copy_is_arc_sealed_with_srs_on_the_fqdn_from_the_domain_ip(world) -> None:
    stack, sink, knot = world
    far = f"far{uuid.uuid4().hex[:6]}@{EXT}"
    domain = _setup(stack, keep={"password": PASSWORD},
                    fwd={"password": PASSWORD, "copies_to": [far, "keep"]})
    fwd = f"fwd@{domain}"
    origin = f"origin@{EXT}"
    assert stack.send(origin, fwd, make_message(origin, fwd, "forward me")) == {}
    sender, _rcpts, content, peer = sink.wait(far)
    assert sender.startswith("SRS0") and sender.endswith(f"@{HOSTNAME}"), sender
    assert peer == "127.0.0.2"  # the routed reinjection of the domain's outbound IP
    for local in (fwd, f"keep@{domain}"):  # the local copy still lands in its Maildir
        [got] = stack.wait_maildir(local, 1)
        assert b"forward me" in got.read_bytes()
    assert b"ARC-Seal:" in content and f"d={domain}".encode() in content
    cv, _results, reason = dkim.arc_verify(content, dnsfunc=published(knot))
    assert cv == dkim.CV_Pass, reason
