"""`systemctl reload` (SIGHUP) applies the config in place, in the daemon and in its worker
processes: a connection open across the reload is not dropped and sees the new values (per
request for the policy service, per session for LMTP), the new log level applies, and the
log names the changed keys that still need a restart."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from test_daemon_serve import SERVE, free_port, stop, wait_listening

from mailpolicy.config import SIZE_HEADROOM
from mailpolicy.policy.protocol import encode_request

POLICY_REQUEST = encode_request({
    "request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
    "client_address": "192.0.2.1", "client_name": "mx.example.net", "queue_id": "Q1",
    "sender": "a@example.net", "recipient": "nobody@example.com", "instance": "1.2.3"})


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("mailpolicy", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def _admin(sock: Path, method: str, path: str, body: dict) -> int:
    c = _UnixHTTP(str(sock))
    c.request(method, path, body=json.dumps(body).encode())
    r = c.getresponse()
    r.read()
    return r.status


class Lines:
    """A line-oriented client on a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(15)
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def reply(self) -> list[bytes]:
        """One SMTP/LMTP reply (all its lines)."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


def _lmtp(port: int) -> tuple[Lines, int]:
    c = Lines(socket.create_connection(("127.0.0.1", port)))
    assert c.reply()[0].startswith(b"220")
    c.send(b"LHLO test\r\n")
    size = [int(x[4:].split()[1]) for x in c.reply() if x[4:].startswith(b"SIZE")]
    return c, size[0]


def _deliver(c: Lines, n: int) -> bytes:
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n")
    assert c.reply()[0].startswith(b"250")
    assert c.reply()[0].startswith(b"250")
    assert c.reply()[0].startswith(b"354")
    c.send(b"Subject: %d\r\n\r\nbody\r\n.\r\n" % n)
    return c.reply()[0]


def _policy(c: Lines) -> bytes:
    c.send(POLICY_REQUEST)
    answer = c.line()
    assert c.line() == b""
    return answer


def _write(cfg: Path, ports: dict[str, int], state: Path, **kv: str) -> None:
    listen = "\n".join(f'{n} = "127.0.0.1:{p}"' for n, p in ports.items())
    cfg.write_text(
        f'[listen]\n{listen}\n[paths]\nstate_dir = "{state}"\n'
        f'[limits]\nlmtp_workers = 2\npolicy_workers = 2\n'
        f'message_size_limit = "{kv["size"]}"\n'
        f'[policy]\nreject_text = "{kv["text"]}"\n[log]\nlevel = "{kv["level"]}"\n')


def _wait_for(out: Path, text: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        got = out.read_text(errors="replace")
        if text in got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never logged:\n{out.read_text()[-3000:]}")


def test_sighup_applies_level_and_limits_without_dropping_connections(tmp_path):
    ports = {n: free_port() for n in ("policy", "socketmap", "filter", "lmtp")}
    cfg, state, out = tmp_path / "mp.toml", tmp_path / "state", tmp_path / "out.log"
    _write(cfg, ports, state, size="1M", text="first text", level="warning")
    with open(out, "wb") as f:
        proc = subprocess.Popen([*SERVE, str(cfg)], stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        for port in ports.values():
            assert wait_listening(port, deadline)
        sock = state / "admin.sock"
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _admin(sock, "POST", "/v1/domains", {"name": "example.com"}) == 201
        assert _admin(sock, "POST", "/v1/mailboxes", {"address": "joe@example.com"}) == 201
        time.sleep(0.5)  # the workers see the new mailbox (directory generation)

        policy = Lines(socket.create_connection(("127.0.0.1", ports["policy"])))
        assert b"first text" in _policy(policy)
        lmtp, size = _lmtp(ports["lmtp"])
        assert size == 1024**2 + SIZE_HEADROOM
        assert _deliver(lmtp, 1).startswith(b"250")
        assert "lmtp.delivered" not in out.read_text()  # level warning

        # reload: a new level, text and size, and a listener address (needs a restart)
        _write(cfg, {**ports, "filter": free_port()}, state, size="2M", text="second text",
               level="info")
        proc.send_signal(signal.SIGHUP)
        log = _wait_for(out, "reload.needs_restart", time.monotonic() + 30)
        assert "keys='listen.filter'" in log
        assert "keys='limits.message_size_limit,log.level,policy.reject_text'" in log
        _wait_for(out, "worker.reloaded", time.monotonic() + 10)
        time.sleep(0.5)  # every worker read its line

        # the connections opened before the reload are still served, with the new values
        # where they are read per request
        assert b"second text" in _policy(policy)
        assert _deliver(lmtp, 2).startswith(b"250")
        _wait_for(out, "lmtp.delivered", time.monotonic() + 10)  # level info now
        # every new connection (to any worker) gets the new size
        for _ in range(6):
            c, size = _lmtp(ports["lmtp"])
            assert size == 2 * 1024**2 + SIZE_HEADROOM
            c.sock.close()
            c2 = Lines(socket.create_connection(("127.0.0.1", ports["policy"])))
            assert b"second text" in _policy(c2)
            c2.sock.close()
        assert wait_listening(ports["filter"], time.monotonic() + 5)  # still on the old port
        lmtp.send(b"QUIT\r\n")
        policy.sock.close()
        assert proc.poll() is None
    finally:
        stop(proc, timeout=20)
