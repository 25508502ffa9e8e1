"""Three nodes on one PostgreSQL (started here), each with its own mailpolicy, Postfix and
Dovecot on its own loopback address: mail reaches a mailbox's home node from any MX, IMAP is
proxied there from any node, a full mailbox on node 2 is refused at RCPT on node 3, mail for a
stopped home node waits in another node's queue until it is back, and a mailbox moves from
node 2 to node 3 during a burst."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Options, Stack, deep_merge, free_port, make_message
from harness_mailpolicy import cli_command, wait_until
from harness_servers import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from pgserver import PgServer

from mailpolicy.store import Store

DOVECOT_PGSQL = Path("/usr/lib/dovecot/modules/auth/libdriver_pgsql.so")
DOMAIN = "cluster.test"
PASSWORD = "bob's long secret"
ADDRESSES = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}


class Cluster:
    def __init__(self, pg: PgServer, url: str, nodes: dict[str, Stack]) -> None:
        self.pg, self.url, self.nodes = pg, url, nodes

    def cli(self, node: str, *args: str, stdin: str = "") -> str:
        stack = self.nodes[node]
        cmd = cli_command(sys.executable, "--socket", str(stack.cfg.admin_socket), *args)
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout

    def used(self, address: str) -> int:
        async def figure() -> int:
            store = await Store.open(self.url)
            try:
                mb = await store.get_mailbox(address)
                assert mb is not None
                return await store.nodes.usage(mb.id)
            finally:
                await store.close()

        return asyncio.run(figure())


class Node(Stack):
    """A stack whose mailpolicy runs this node's doveadm (for `mailbox move`)."""

    def _write_mailpolicy_config(self):  # type: ignore[no-untyped-def]
        self.opts.mailpolicy = deep_merge(self.opts.mailpolicy, {"cluster": {
            "doveadm_command": ["/usr/bin/doveadm", "-c", str(self.work / "dovecot" /
                                                               "dovecot.conf")]}})
        return super()._write_mailpolicy_config()


def _node(name: str, url: str, doveadm_port: int) -> Stack:
    return Node(Options(address=ADDRESSES[name], mailpolicy={
        "store": {"url": url},
        "cluster": {"node": name, "heartbeat_seconds": 1.0, "doveadm_port": doveadm_port,
                    "doveadm_password": "e2e doveadm secret"},
        "limits": {"lmtp_workers": 1, "policy_workers": 1}}))


@pytest.fixture(scope="module")
def cluster(e2e_system: None) -> Iterator[Cluster]:
    if not DOVECOT_PGSQL.exists():
        pytest.fail(f"{DOVECOT_PGSQL} missing: apt-get install dovecot-pgsql "
                    "(scripts/install-system-deps.sh)", pytrace=False)
    pg = PgServer().start()
    started: list[Stack] = []
    try:
        url = pg.createdb() + "?ssl=disable"  # loopback; and HOME may be root's
        asyncio.run(_migrate(url))  # once, before two daemons would race to do it
        doveadm_port = free_port()  # the same on every node (each on its own address)
        for name in ADDRESSES:
            started.append(_node(name, url, doveadm_port).start())
        c = Cluster(pg, url, dict(zip(ADDRESSES, started, strict=True)))
        for name, stack in c.nodes.items():  # what an admin says: where each Dovecot is
            c.cli("n1", "node", "edit", name, "--imap",
                  f"{ADDRESSES[name]}:{stack.ports['imap']}")
        c.cli("n1", "domain", "add", DOMAIN)
        c.cli("n1", "mailbox", "add", f"bob@{DOMAIN}", "--node", "n2", "--password-stdin",
              stdin=PASSWORD + "\n")
        c.cli("n1", "mailbox", "add", f"full@{DOMAIN}", "--node", "n2", "--max-size", "8K")
        c.cli("n1", "mailbox", "add", f"ann@{DOMAIN}", "--node", "n1")
        time.sleep(1.5)  # node 2's caches hear of it by NOTIFY (within 1 s)
        yield c
    finally:
        for stack in reversed(started):
            stack.stop()
        pg.close()


async def _migrate(url: str) -> None:
    store = await Store.open(url)
    await store.close()


def test_mail_sent_to_any_node_lands_only_on_the_home_node(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    assert n1.send("alice@remote.test", f"Bob+news@{DOMAIN}",
                   make_message("alice@remote.test", f"bob@{DOMAIN}", "via n1")) == {}
    n2.wait_maildir(f"bob@{DOMAIN}", 1)
    assert n1.send("alice@remote.test", f"ann@{DOMAIN}",
                   make_message("alice@remote.test", f"ann@{DOMAIN}", "for n1")) == {}
    n1.wait_maildir(f"ann@{DOMAIN}", 1)
    n1.wait_queue_empty()
    assert n1.messages(f"bob@{DOMAIN}") == [] and n2.messages(f"ann@{DOMAIN}") == []
    line = n1.wait_log(f"to=<bob+news@{DOMAIN}>")
    assert f"{ADDRESSES['n2']}[{ADDRESSES['n2']}]:{n2.ports['lmtp']}" in line, line
    # node 2's LMTP refuses (4xx) a mailbox at home on node 1 rather than store it
    with smtplib.LMTP(ADDRESSES["n2"], n2.ports["lmtp"]) as lmtp:
        lmtp.ehlo("n1.test")
        lmtp.mail("alice@remote.test")
        code, text = lmtp.rcpt(f"ann@{DOMAIN}")
    assert code == 451 and b"lives on node n1" in text
    boxes = {m["address"]: m for m in json.loads(cluster.cli("n2", "mailbox", "list",
                                                             "--json"))["mailboxes"]}
    assert boxes[f"bob@{DOMAIN}"]["home_node"] == "n2"
    assert boxes[f"bob@{DOMAIN}"]["usage"]["used"] > 0  # node 2's figure, read on node 2
    shown = cluster.cli("n1", "mailbox", "show", f"bob@{DOMAIN}")
    assert "Home node:" in shown and "n2" in shown


def test_imap_login_on_node1_is_proxied_to_the_home_node(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    n2.wait_maildir(f"bob@{DOMAIN}", 1)
    m = n1.imap(f"bob@{DOMAIN}", PASSWORD)
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == len(n2.messages(f"bob@{DOMAIN}")) >= 1
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"via n1" in data[0][1]
    finally:
        m.logout()
    assert "proxy" in n1.dovecot.logfile.read_text().lower()
    with pytest.raises(imaplib.IMAP4.error):
        n1.imap(f"bob@{DOMAIN}", "wrong password")


def test_two_senders_through_two_mxs_at_once_get_one_autoreply_each(cluster: Cluster) -> None:
    """Each sender writes to a vacationing mailbox (home n2) through both MXs at the same
    moment; the replies go to the senders' own mailboxes, one at home on each node."""
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    vac, subject = f"vac@{DOMAIN}", "Away (cluster e2e)"
    senders = {f"ann@{DOMAIN}": n1, f"cat@{DOMAIN}": n2}  # address: its home node's stack
    cluster.cli("n1", "mailbox", "add", vac, "--node", "n2")
    cluster.cli("n1", "mailbox", "add", f"cat@{DOMAIN}", "--node", "n2")
    cluster.cli("n1", "autoreply", "set", vac, "--subject", subject, "--message",
                "Away until Monday.", "--enable")
    time.sleep(2.5)  # the home node re-reads its set of active autoresponders every 2 s

    def replies(sender: str) -> list[Path]:
        return [p for p in senders[sender].messages(sender)
                if _header(p, "Subject") == subject]

    import threading

    go = threading.Barrier(4)
    errors: list[BaseException] = []

    def send(sender: str, mx: Stack) -> None:
        try:
            msg = make_message(sender, vac, f"to vac via {mx.opts.address}")
            go.wait(10)
            assert mx.send(sender, vac, msg) == {}
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(s, mx)) for s in senders for mx in (n1, n2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    n2.wait_maildir(vac, 4)
    for sender in senders:
        wait_until(lambda s=sender: replies(s) or None, 30, f"the autoreply to {sender}",
                   n2.diagnose)
    n1.wait_queue_empty()
    n2.wait_queue_empty()
    time.sleep(2.0)  # grace: a second reply would have arrived by now
    for sender in senders:
        got = replies(sender)
        assert len(got) == 1, (sender, [p.read_bytes()[:400] for p in got])
        assert _header(got[0], "Auto-Submitted") == "auto-replied"
        assert _header(got[0], "To") == sender
    assert len(n2.messages(vac)) == 4  # every message was delivered, once
    log = n2.mailpolicy.logfile.read_text()  # the claim in the store decided the other two
    suppressed = [line for line in log.splitlines()
                  if "autoreply.suppressed" in line and "already-replied" in line]
    assert len(suppressed) == 2, suppressed


def test_full_mailbox_on_node2_is_refused_at_rcpt_on_node3(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes["n1"], cluster.nodes["n2"], cluster.nodes["n3"]
    big = "x" * 5000 + "\n"
    assert n1.send("alice@remote.test", f"full@{DOMAIN}",
                   make_message("alice@remote.test", f"full@{DOMAIN}", "first", big)) == {}
    n2.wait_maildir(f"full@{DOMAIN}", 1)
    wait_until(lambda: cluster.used(f"full@{DOMAIN}") > 3000, 10,
               "node 2 to report the usage of full@ to the store")
    time.sleep(1.2)  # a policy service reuses a home node's figure for 1 s
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        n3.send("alice@remote.test", f"full@{DOMAIN}",
                make_message("alice@remote.test", f"full@{DOMAIN}", "second", big))
    code, text = e.value.recipients[f"full@{DOMAIN}"]
    assert code == 552 and b"5.2.2" in text
    assert len(n2.messages(f"full@{DOMAIN}")) == 1


def test_mail_waits_while_the_home_node_is_down(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    before = len(n2.wait_maildir(f"bob@{DOMAIN}", 1))
    n2.mailpolicy.stop()
    try:
        assert n1.send("alice@remote.test", f"bob@{DOMAIN}",
                       make_message("alice@remote.test", f"bob@{DOMAIN}", "while down")) == {}
        line = n1.wait_log("status=deferred")
        assert f"bob@{DOMAIN}" in line and ADDRESSES["n2"] in line, line
        rows = {r.split()[0]: r.split() for r in cluster.cli("n1", "node", "list").splitlines()}
        wait_until(lambda: "UNREACHABLE" in cluster.cli("n1", "node", "list"), 10,
                   "node 2 to be listed as unreachable")
        assert rows["n1"][2] == "yes"
        assert len(n2.messages(f"bob@{DOMAIN}")) == before
    finally:
        n2.mailpolicy.start()
    run(["/usr/sbin/postqueue", "-c", str(n1.postfix.config_dir), "-f"])
    n2.wait_maildir(f"bob@{DOMAIN}", before + 1)
    n1.wait_queue_empty()
    assert n1.messages(f"bob@{DOMAIN}") == []


def test_postgresql_restart_mid_burst_gives_4xx_only_and_loses_nothing(
        cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    addr = f"bob@{DOMAIN}"
    had = {_message_id(p) for p in n2.messages(addr)}
    accepted: list[str] = []
    temporary = [0]
    errors: list[BaseException] = []

    def send_like_an_mta(msg: bytes) -> None:  # retry 4xx, bounded; a 5xx fails the test
        for _attempt in range(120):
            try:
                assert n1.send("alice@remote.test", addr, msg) == {}
                return
            except smtplib.SMTPRecipientsRefused as e:
                code = e.recipients[addr][0]
                assert 400 <= code < 500, e.recipients
            except smtplib.SMTPResponseException as e:
                assert 400 <= e.smtp_code < 500, (e.smtp_code, e.smtp_error)
            except (smtplib.SMTPServerDisconnected, OSError):
                pass
            temporary[0] += 1
            time.sleep(0.25)
        raise AssertionError("still refused after 30 s")

    def burst() -> None:
        try:
            for i in range(24):
                msg = make_message("alice@remote.test", addr, f"pg restart {i}")
                send_like_an_mta(msg)
                accepted.append(_message_id_of(msg))
                time.sleep(0.1)
        except BaseException as e:  # reported below
            errors.append(e)

    import threading

    t = threading.Thread(target=burst)
    t.start()
    try:
        time.sleep(0.8)
        cluster.pg.stop()
        time.sleep(3)
    finally:
        cluster.pg.start()
        t.join(120)
    assert not errors, errors
    expected = had | set(accepted)
    flushed = [0.0]

    def arrived() -> list[Path] | None:
        if time.monotonic() - flushed[0] > 2:
            flushed[0] = time.monotonic()
            for stack in (n1, n2):
                run(["/usr/sbin/postqueue", "-c", str(stack.postfix.config_dir), "-f"])
        found = n2.messages(addr)
        return found if len(found) >= len(expected) else None

    got = wait_until(arrived, 90, f"{len(expected)} messages for {addr} on node 2",
                     n1.diagnose)
    assert sorted(_message_id(p) for p in got) == sorted(expected)  # none lost, none twice
    for stack in (n1, n2):
        assert "status=bounced" not in stack.postfix.log()


def test_mailbox_move_during_a_burst_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes["n1"], cluster.nodes["n2"], cluster.nodes["n3"]
    addr = f"bob@{DOMAIN}"
    had = len(n2.messages(addr))
    n1.send("alice@remote.test", addr, make_message("alice@remote.test", addr, "before"))
    before = {_message_id(p) for p in n2.wait_maildir(addr, had + 1)}
    sent: list[str] = []
    errors: list[BaseException] = []

    def burst() -> None:  # through all three MXs, while the move runs
        try:
            for i in range(21):
                msg = make_message("alice@remote.test", addr, f"burst {i}")
                sent.append(_message_id_of(msg))
                assert (n1, n2, n3)[i % 3].send("alice@remote.test", addr, msg) == {}
                time.sleep(0.15)
        except BaseException as e:  # reported below
            errors.append(e)

    import threading

    # IMAP sessions open on the old home, directly and proxied through node 1
    sessions = [_imap_as_a_client(n2, addr), _imap_as_a_client(n1, addr)]
    for m in sessions:
        assert m.select("INBOX")[0] == "OK"
    t = threading.Thread(target=burst)
    t.start()
    try:
        time.sleep(0.5)
        out = cluster.cli("n2", "mailbox", "move", addr, "--to", "n3", "--json")
    finally:
        t.join(60)
    assert not errors, errors
    res = json.loads(out)
    assert (res["from"], res["to"]) == ("n2", "n3") and res["deferred_seconds"] < 10
    assert res["sessions_kicked"] is True
    for m in sessions:  # kicked at the switch: the client must log in again
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            m.noop()
        with contextlib.suppress(Exception):
            m.shutdown()
    log = n2.dovecot.logfile.read_text()  # both IMAP processes on node 2, by doveadm kick
    assert log.count("Killed with signal 15") >= len(sessions), log[-3000:]
    expected = before | set(sent)
    flushed = [0.0]

    # Mail queued for the old home during the switch is retried (flushed here rather than at
    # Postfix's backoff); a quiet MX reuses its last resolution of the address for a while.
    def arrived() -> list[Path] | None:
        if time.monotonic() - flushed[0] > 2:
            flushed[0] = time.monotonic()
            for stack in (n1, n2, n3):
                run(["/usr/sbin/postqueue", "-c", str(stack.postfix.config_dir), "-f"])
        found = n3.messages(addr)
        return found if len(found) >= len(expected) else None

    got = wait_until(arrived, 60, f"{len(expected)} messages for {addr} on node 3",
                     n3.diagnose)
    ids = [_message_id(p) for p in got]
    assert sorted(ids) == sorted(expected)  # nothing lost, nothing twice
    for stack in (n1, n2, n3):
        stack.wait_queue_empty(60)
    assert not n2.maildir(addr).exists()  # the old copy is gone
    assert n1.messages(addr) == []
    shown = json.loads(cluster.cli("n2", "mailbox", "show", addr, "--json"))
    assert shown["home_node"] == "n3"
    m = n2.imap(addr, PASSWORD)  # now proxied the other way
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == len(expected)
    finally:
        m.logout()


def _message_id_of(message: bytes) -> str:
    import email

    return str(email.message_from_bytes(message)["Message-ID"])


def _imap_as_a_client(stack: Stack, address: str) -> imaplib.IMAP4:
    """Log in, retrying a temporary failure as a mail client does (bounded): after the
    PostgreSQL restart above, each Dovecot finds its SQL connection broken on first use."""
    for _attempt in range(10):
        try:
            return stack.imap(address, PASSWORD)
        except imaplib.IMAP4.error as e:
            if "UNAVAILABLE" not in str(e):
                raise
            time.sleep(0.5)
    return stack.imap(address, PASSWORD)


def _header(path: Path, name: str) -> str:
    import email

    return str(email.message_from_bytes(path.read_bytes())[name])


def _message_id(path: Path) -> str:
    return _message_id_of(path.read_bytes())
