"""Soak: mixed LMTP, filter and policy load on a real `mailpolicy serve`, a slow-client flood
and a SIGKILL of the daemon every few minutes (restarted at once, as systemd's Restart= does).

    .venv/bin/python bench/soak.py [--minutes 20] [--kill-every 180] [--flood 400] [--rate 10]
    .venv/bin/python bench/soak.py --short        # a 2-minute smoke run (kill every 40 s)

Normal clients (LMTP, filter, policy; persistent connections, `--rate` messages or requests a
second each) run for the whole time; in the middle half of every kill cycle `--flood`
connections (a third each to LMTP, filter, policy) send LHLO/MAIL/RCPT/DATA (or half a policy
request) and then nothing. The filter's next hop is a sink in this process (it counts what it
took). At the end the daemon runs until its start-up sweep of tmp/ could finish, stops, and
the report says:

- acknowledged vs stored: LMTP 250s whose Message-ID is in a Maildir, filter 250s the next
  hop took; `lost` (acknowledged, not stored) must be 0; stored but never acknowledged (the
  daemon died between fsync and its reply: Postfix sends it again) is allowed;
- peak RSS (daemon + workers) of every daemon run: flat means no growth run after run;
- stale files left in Maildir tmp/ directories (0 expected);
- p50/p99 latency of the normal clients with and without the flood, per service (a reply
  that never came within 30 s counts as 30 s).

Every loop ends at the deadline; nothing runs unbounded. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOMAIN = "soak.test"
BOXES = [f"box{i}" for i in range(8)]
OP_TIMEOUT = 30.0  # seconds a normal client waits for one reply before it counts a timeout
SERVE = ("import sys; from mailpolicy.runtime.daemon import run; sys.exit(run(sys.argv[1]))")
MSGID = re.compile(rb"^Message-ID: <([^>]+)>", re.MULTILINE | re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stats:
    """What the clients saw."""

    def __init__(self) -> None:
        self.acked: dict[str, set[str]] = defaultdict(set)  # service -> Message-IDs
        self.latency: dict[tuple[str, bool], list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.sink: set[str] = set()  # Message-IDs the filter's next hop took
        self.flooding = False
        self.rss_runs: list[int] = []  # peak RSS (kB) of each daemon run
        self.restarts: list[float] = []  # seconds from SIGKILL to listening again


# ---- the daemon ----

def write_config(work: Path, ports: dict[str, int], sink_port: int) -> Path:
    listen = "\n".join(f'{n} = "127.0.0.1:{p}"' for n, p in ports.items())
    cfg = work / "mailpolicy.toml"
    cfg.write_text(
        f'[listen]\n{listen}\n[paths]\nstate_dir = "{work / "state"}"\n'
        f'[admin]\ngroup = ""\n[reinject]\nport = {sink_port}\ntimeout_seconds = 10.0\n'
        '[dns]\nnameservers = ["127.0.0.9:53"]\ntimeout_seconds = 0.5\n'
        '[log]\nlevel = "warning"\n')
    return cfg


class Daemon:
    def __init__(self, cfg: Path, work: Path, ports: dict[str, int]) -> None:
        self.cfg, self.work, self.ports = cfg, work, ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(work / "daemon.log", "ab")  # closed in stop()
        self.started = 0.0

    async def start(self) -> float:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
            [sys.executable, "-c", SERVE, str(self.cfg)], stdout=self.log,
            stderr=subprocess.STDOUT, cwd=self.work)
        deadline = t0 + 120
        sock = self.work / "state" / "admin.sock"
        for port in self.ports.values():
            while not await _listening(port) or not sock.exists():
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"daemon did not start; see {self.work / 'daemon.log'}")
                await asyncio.sleep(0.05)
        self.started = time.monotonic()
        return self.started - t0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def rss_kb(self) -> int:
        """VmRSS of the daemon and its worker processes."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        pids = [self.proc.pid]
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total


async def _listening(port: int) -> bool:
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return False
    w.close()
    return True


async def admin(sock: Path, method: str, path: str, body: dict) -> int:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    data = json.dumps(body).encode()
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: mailpolicy\r\nContent-Type: "
                 f"application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n"
                 f"\r\n".encode() + data)
    status = int((await reader.readline()).split()[1])
    await reader.read()
    writer.close()
    return status


# ---- the filter's next hop ----

async def sink_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       stats: Stats) -> None:
    """A minimal SMTP server: takes every message, remembers its Message-ID."""
    writer.write(b"220 sink ESMTP\r\n")
    try:
        while line := await reader.readline():
            cmd = line[:4].upper()
            if cmd in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif cmd == b"DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                body = bytearray()
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    body += chunk
                m = MSGID.search(body)
                if m:
                    stats.sink.add(m.group(1).decode())
                writer.write(b"250 2.0.0 taken\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


# ---- the clients ----

class LineClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> LineClient:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), OP_TIMEOUT)
        return cls(r, w)

    async def reply(self) -> bytes:
        """One SMTP reply; its last line."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), OP_TIMEOUT)
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return line

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


async def failed(stats: Stats, name: str, flood: bool, t0: float, e: BaseException,
                 c: LineClient | None) -> None:
    """A client's request failed: count it (a starved request counts, at its wait, in the
    latencies), drop the connection and pause before the next; None: the new connection."""
    stats.errors[f"{name} {type(e).__name__}"] += 1
    if t0 and isinstance(e, TimeoutError):
        stats.latency[(name, flood)].append(time.monotonic() - t0)
    if c is not None:
        c.close()
    await asyncio.sleep(0.2)


async def smtp_client(name: str, port: int, hello: bytes, stats: Stats, deadline: float,
                      rate: float, seq: list[int]) -> None:
    """A normal LMTP or SMTP (filter) client: one message at a time on a kept connection."""
    c: LineClient | None = None
    while time.monotonic() < deadline:
        t0, flood = 0.0, False
        try:
            if c is None:
                c = await LineClient.open(port)
                assert (await c.reply()).startswith(b"220")
                c.send(hello + b" soak.client\r\n")
                assert (await c.reply()).startswith(b"250")
            seq[0] += 1
            msgid = f"{name}-{seq[0]}-{os.getpid()}@soak"
            rcpt = f"{BOXES[seq[0] % len(BOXES)]}@{DOMAIN}"
            t0 = time.monotonic()
            flood = stats.flooding
            c.send(f"MAIL FROM:<s@remote.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            for expect in (b"250", b"250", b"354"):
                got = await c.reply()
                if not got.startswith(expect):
                    raise ConnectionError(f"{expect!r} expected, got {got!r}")
            c.send(f"Message-ID: <{msgid}>\r\nSubject: soak\r\n\r\n".encode()
                   + b"x" * 2000 + b"\r\n.\r\n")
            got = await c.reply()
            stats.latency[(name, flood)].append(time.monotonic() - t0)
            if got.startswith(b"250"):
                stats.acked[name].add(msgid)
            else:
                stats.errors[f"{name} {got[:3].decode()}"] += 1
                c.send(b"RSET\r\n")
                await c.reply()
        except (OSError, ConnectionError, TimeoutError, AssertionError, ValueError) as e:
            c = await failed(stats, name, flood, t0, e, c)
            continue
        await asyncio.sleep(1 / rate)
    if c is not None:
        c.close()


POLICY = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
          b"client_address=192.0.2.1\nclient_name=mx.example.net\nqueue_id=Q\n"
          b"sender=s@remote.example\nrecipient=%s\ninstance=1\n\n")


async def policy_client(port: int, stats: Stats, deadline: float, rate: float) -> None:
    c: LineClient | None = None
    n = 0
    while time.monotonic() < deadline:
        t0, flood = 0.0, False
        try:
            if c is None:
                c = await LineClient.open(port)
            n += 1
            rcpt = f"{BOXES[n % len(BOXES)]}@{DOMAIN}" if n % 4 else f"nobody{n}@{DOMAIN}"
            t0 = time.monotonic()
            flood = stats.flooding
            c.send(POLICY % rcpt.encode())
            action = await asyncio.wait_for(c.reader.readline(), OP_TIMEOUT)
            await asyncio.wait_for(c.reader.readline(), OP_TIMEOUT)
            if not action.startswith(b"action="):
                raise ConnectionError("closed")
            stats.latency[("policy", flood)].append(time.monotonic() - t0)
        except (OSError, ConnectionError, TimeoutError) as e:
            c = await failed(stats, "policy", flood, t0, e, c)
            continue
        await asyncio.sleep(1 / rate)
    if c is not None:
        c.close()


async def slow_client(kind: str, port: int, until: float) -> None:
    """One flood connection: the start of a transaction (or of a policy request), then
    silence until `until` (or until the server gives up on it)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return
    try:
        if kind == "policy":
            w.write(b"request=smtpd_access_policy\nprotocol_state=RCPT\n")
        else:
            hello = b"LHLO" if kind == "lmtp" else b"EHLO"
            w.write(hello + b" slow\r\nMAIL FROM:<slow@remote.example>\r\n"
                    + f"RCPT TO:<{BOXES[0]}@{DOMAIN}>\r\nDATA\r\n".encode())
        await w.drain()
        while time.monotonic() < until:
            try:
                if not await asyncio.wait_for(r.read(4096), max(0.1, until - time.monotonic())):
                    return  # the server closed it
            except TimeoutError:
                return
    except (OSError, ConnectionError):
        return
    finally:
        w.close()


async def flood_cycle(ports: dict[str, int], n: int, stats: Stats, start: float,
                      length: float) -> None:
    """Open `n` slow connections from `start` for `length` seconds."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    until = time.monotonic() + length
    stats.flooding = True
    kinds = [("lmtp", ports["lmtp"]), ("filter", ports["filter"]), ("policy", ports["policy"])]
    try:
        await asyncio.gather(*(slow_client(*kinds[i % 3], until) for i in range(n)))
    finally:
        stats.flooding = False


# ---- the run ----

def stored_ids(maildir_root: Path) -> tuple[set[str], int]:
    """Message-IDs of every message in new/ or cur/ and the number of tmp/ files."""
    ids: set[str] = set()
    tmp = 0
    for path in maildir_root.rglob("*"):
        if not path.is_file():
            continue
        if path.parent.name == "tmp":
            tmp += 1
        elif path.parent.name in ("new", "cur"):
            m = MSGID.search(path.read_bytes()[:4096])
            if m:
                ids.add(m.group(1).decode())
    return ids, tmp


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


async def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mp-soak-"))
    stats = Stats()
    sink = await asyncio.start_server(lambda r, w: sink_session(r, w, stats), "127.0.0.1", 0)
    sink_port = sink.sockets[0].getsockname()[1]
    ports = {n: free_port() for n in ("policy", "socketmap", "filter", "lmtp")}
    cfg = write_config(work, ports, sink_port)
    daemon = Daemon(cfg, work, ports)
    try:
        return await _soak(args, work, stats, sink, ports, daemon)
    finally:
        daemon.stop()
        sink.close()


async def _soak(args: argparse.Namespace, work: Path, stats: Stats, sink: asyncio.Server,
                ports: dict[str, int], daemon: Daemon) -> dict:
    await daemon.start()
    sock = work / "state" / "admin.sock"
    assert await admin(sock, "POST", "/v1/domains", {"name": DOMAIN}) == 201
    for b in BOXES:
        assert await admin(sock, "POST", "/v1/mailboxes", {"address": f"{b}@{DOMAIN}"}) == 201
    await asyncio.sleep(0.5)

    t_start = time.monotonic()
    deadline = t_start + args.minutes * 60
    seqs: dict[str, list[int]] = {"lmtp": [0], "filter": [0]}
    clients = [asyncio.create_task(smtp_client("lmtp", ports["lmtp"], b"LHLO", stats,
                                               deadline, args.rate, seqs["lmtp"]))
               for _ in range(args.clients)]
    clients += [asyncio.create_task(smtp_client("filter", ports["filter"], b"EHLO", stats,
                                                deadline, args.rate, seqs["filter"]))
                for _ in range(max(1, args.clients // 2))]
    clients += [asyncio.create_task(policy_client(ports["policy"], stats, deadline, args.rate))
                for _ in range(max(1, args.clients // 2))]

    peak = 0
    cycle_start = time.monotonic()
    flood = asyncio.create_task(flood_cycle(ports, args.flood, stats,
                                            cycle_start + args.kill_every / 4,
                                            args.kill_every / 2))
    last_restart = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        peak = max(peak, daemon.rss_kb())
        now = time.monotonic()
        if now - cycle_start >= args.kill_every and deadline - now > args.kill_every / 2:
            await flood
            stats.rss_runs.append(peak)
            peak = 0
            daemon.kill()
            stats.restarts.append(await daemon.start())
            last_restart = cycle_start = time.monotonic()
            flood = asyncio.create_task(flood_cycle(ports, args.flood, stats,
                                                    cycle_start + args.kill_every / 4,
                                                    args.kill_every / 2))
    await asyncio.gather(*clients)
    flood.cancel()
    await asyncio.gather(flood, return_exceptions=True)
    stats.rss_runs.append(peak)
    # the start-up sweep removes a killed writer's files a minute after its death
    await asyncio.sleep(max(0.0, last_restart + 66 - time.monotonic()))
    daemon.stop()

    stored, tmp_files = stored_ids(work / "state" / "mail")
    report: dict = {"minutes": args.minutes, "kills": len(stats.restarts),
                    "restart_seconds": [round(x, 2) for x in stats.restarts],
                    "peak_rss_mb_per_run": [round(x / 1024, 1) for x in stats.rss_runs],
                    "stale_tmp_files": tmp_files, "errors_seen": dict(stats.errors)}
    for name, got in (("lmtp", stored), ("filter", stats.sink)):
        acked = stats.acked[name]
        ours = {i for i in got if i.startswith(f"{name}-")}
        report[name] = {"acknowledged": len(acked), "acknowledged_and_stored": len(acked & ours),
                        "lost": len(acked - ours), "stored_not_acknowledged": len(ours - acked)}
    for name in ("lmtp", "filter", "policy"):
        for flooding in (False, True):
            lat = stats.latency[(name, flooding)]
            report[f"{name}_latency_ms_{'flood' if flooding else 'calm'}"] = {
                "n": len(lat), "p50": round(pct(lat, 0.5), 1), "p99": round(pct(lat, 0.99), 1),
                "max": round(max(lat) * 1000, 1) if lat else None}
    report["work_dir"] = str(work)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--kill-every", type=float, default=180.0, help="seconds between SIGKILLs")
    ap.add_argument("--flood", type=int, default=400, help="slow connections per flood (a "
                    "third each to LMTP, filter, policy: more than the 64 delivery slots of "
                    "each LMTP worker)")
    ap.add_argument("--clients", type=int, default=4, help="normal LMTP clients (half as many "
                    "filter and policy clients)")
    ap.add_argument("--rate", type=float, default=10.0, help="messages/requests a second per "
                    "normal client")
    ap.add_argument("--short", action="store_true", help="a 2-minute smoke run")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.short:
        args.minutes, args.kill_every, args.flood = 2.0, 40.0, 150
    report = asyncio.run(run(args))
    if not args.keep:
        shutil.rmtree(report.pop("work_dir"), ignore_errors=True)
    print(json.dumps(report, indent=2))
    ok = (report["lmtp"]["lost"] == 0 and report["filter"]["lost"] == 0
          and report["stale_tmp_files"] == 0)
    print("OK" if ok else "FAILED: lost messages or stale tmp/ files", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
