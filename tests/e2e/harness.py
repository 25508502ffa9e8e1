"""Private Postfix, Dovecot and mailpolicy on loopback for end-to-end tests, and helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import grp
import imaplib
import json
import os
import pwd
import shutil
import smtplib
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import harness_mailpolicy as mailpolicy_proc
from harness_mailpolicy import HarnessError, tail, wait_until
from harness_servers import HOSTNAME, Dovecot, Options, Postfix, run

from mailpolicy import config as config_mod
from mailpolicy.core.outbound import pool
from mailpolicy.deploy import postfix as postfixconf

__all__ = ["HarnessError", "Options", "Stack", "make_message", "missing_binaries",
           "plain_postfix_main_cf", "running"]

BINARIES = ("/usr/sbin/postfix", "/usr/sbin/postconf", "/usr/sbin/postqueue", "/usr/sbin/dovecot",
            "/usr/bin/doveconf", "/usr/bin/script")
DOVECOT_SQLITE = Path("/usr/lib/dovecot/modules/libdriver_sqlite.so")
INSTALL_HINT = ("install them with `sudo scripts/install-system-deps.sh` (or `apt-get install "
                "postfix dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite`)")
CACHE_SETTLE = 2.2  # the policy/socketmap cache TTL (mailpolicy/cache.py DEFAULT_TTL) + margin


def missing_binaries() -> list[str]:
    """What is missing for the e2e suite (empty: everything is installed)."""
    missing = [b for b in BINARIES if not os.access(b, os.X_OK)]
    if not DOVECOT_SQLITE.exists():
        missing.append(f"{DOVECOT_SQLITE} (dovecot-sqlite)")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROUTED_PORTS = 4  # routed reinjection listeners a stack may need (one per pool address)


def free_port_run(n: int, tries: int = 50) -> int:
    """The first of `n` consecutive free loopback ports (the routed reinjection listeners
    are at reinject.routed_port_base + index)."""
    for _ in range(tries):
        base = free_port()
        if base + n > 65536:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + n):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise HarnessError(f"no {n} consecutive free ports on 127.0.0.1")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A tiny TOML writer for nested tables of scalars and lists (enough for our config)."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            out += f"\n[{name}]\n" + to_toml(v, name)
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


def default_run_user() -> str:
    env = os.environ.get("MAILPOLICY_E2E_USER")
    if env:
        return env
    with contextlib.suppress(KeyError):
        pwd.getpwnam("mailpolicy")
        return "mailpolicy"
    return "nobody"


class Stack:
    """mailpolicy + private Postfix + Dovecot, started in that order, stopped in reverse."""

    def __init__(self, opts: Options | None = None) -> None:
        self.opts = opts or Options()
        self.work = Path(tempfile.mkdtemp(prefix="mailpolicy-e2e-"))
        self.work.chmod(0o755)  # the unprivileged mailpolicy user must reach its directories
        self.user = self.opts.run_as or default_run_user()
        pw = pwd.getpwnam(self.user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.group = grp.getgrgid(self.gid).gr_name
        self.ports = {name: free_port() for name in (
            "smtpd", "reinject", "policy", "socketmap", "filter", "lmtp", "imap", "submission",
            "submissions", "filter_originating")}
        self.ports["routed"] = free_port_run(ROUTED_PORTS)
        self.cfg_file = self.work / "mailpolicy.toml"
        self.postfix = Postfix(self.work / "postfix", self.ports["smtpd"])
        self.cfg = self._write_mailpolicy_config()
        self.mailpolicy = mailpolicy_proc.Mailpolicy(self.work, self.cfg_file, self.cfg,
                                                     self.uid, self.gid)
        self.dovecot = Dovecot(self.work / "dovecot", self.ports["imap"], self.opts.address,
                               self.postfix.queue_dir if self.opts.dovecot_lmtp else None)
        self.notes: list[str] = []

    # ------------------------------------------------------------------ set-up
    def _write_mailpolicy_config(self) -> config_mod.Config:
        state = self.work / "mailpolicy"
        state.mkdir(mode=0o750)
        os.chown(state, self.uid, self.gid)
        p = self.ports
        data = {
            "listen": {"policy": f"127.0.0.1:{p['policy']}",
                       "socketmap": f"127.0.0.1:{p['socketmap']}",
                       "filter": f"127.0.0.1:{p['filter']}",
                       # as README "Deploying" says: LMTP only on a Unix socket that only
                       # Postfix (and mailpolicy) can reach, in Postfix's queue directory; a
                       # cluster node also on TCP at its address (other nodes deliver there)
                       "lmtp": (f"{self.opts.address}:{p['lmtp']}"
                                if self.opts.address != "127.0.0.1" else ""),
                       "lmtp_socket": str(self._lmtp_socket_dir() / "lmtp"),
                       "filter_originating": f"127.0.0.1:{p['filter_originating']}"},
            "submission": {"submission": f"127.0.0.1:{p['submission']}",
                           "submissions": f"127.0.0.1:{p['submissions']}",
                           "postfix_queue_directory": str(self.work / "postfix" / "spool")},
            "paths": {"state_dir": str(state)},
            "admin": {"group": ""},
            "outbound": {"ip_pool": ["127.0.0.1"]},
            "reinject": {"host": "127.0.0.1", "port": p["reinject"],
                         "routed_port_base": p["routed"]},
            "filter": {"mode": self.opts.filter_mode, "hostname": HOSTNAME,
                       "srs_domain": HOSTNAME},
            "log": {"level": "debug"},
        }
        data = deep_merge(data, self.opts.mailpolicy)
        self.cfg_file.write_text(to_toml(data))
        return config_mod.from_dict(data)

    def _lmtp_socket_dir(self) -> Path:
        """README step 1: `install -d -o mailpolicy -g postfix -m 2750
        /var/spool/postfix/mailpolicy` (setgid: the socket gets the group postfix)."""
        d = self.postfix.queue_dir / "mailpolicy"
        d.mkdir(parents=True)  # the queue directory itself stays root's
        os.chown(d, self.uid, grp.getgrnam("postfix").gr_gid)
        d.chmod(0o2750)
        return d

    def postfix_fragments(self) -> dict[str, Any]:
        """Exactly what `mailpolicy postfix-config --json` prints for our config."""
        res = run(mailpolicy_proc.cli_command(sys.executable, "postfix-config", "-c",
                                              str(self.cfg_file), "--json"), check=False)
        if res.returncode == 0:
            return json.loads(res.stdout)
        self.notes.append(f"`mailpolicy postfix-config` failed ({res.returncode}): "
                          f"{res.stderr.strip()[-300:]}; used postfixconf.render() instead")
        return json.loads(postfixconf.render(self.cfg, pool(self.cfg), as_json=True))

    def start(self) -> Stack:
        try:
            self.mailpolicy.start()
            self.postfix.write_config(self.opts, self.postfix_fragments())
            self.postfix.start()
            if self.opts.dovecot:
                self.dovecot.write_config(self.cfg, self.user, self.group, self.uid)
                self.dovecot.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, keep: bool | None = None) -> None:
        for part in (self.dovecot.stop, self.postfix.stop, self.mailpolicy.stop):
            with contextlib.suppress(Exception):
                part()
        if keep is None:
            keep = bool(os.environ.get("MAILPOLICY_E2E_KEEP"))
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ diagnostics
    def diagnose(self) -> str:
        """Which component looks broken, and the log tails of all of them."""
        lines = [f"work dir: {self.work} (set MAILPOLICY_E2E_KEEP=1 to keep it)"]
        lines += self.notes
        lines += self.mailpolicy.listener_report()
        try:
            q = self.postfix.queue()
        except Exception as e:
            q, lines = [], [*lines, f"postqueue failed: {e}"]
        for msg in q:
            for r in msg.get("recipients", []):
                reason = r.get("delay_reason", "")
                lines.append(f"queued {msg.get('queue_id')} ({msg.get('queue_name')}) "
                             f"-> {r.get('address')}: {reason}")
                culprit = self.culprit(reason)
                if culprit:
                    lines.append(f"  => looks like a problem in: {culprit}")
        lines += ["--- Postfix maillog (tail) ---", tail(self.postfix.maillog, 60),
                  "--- mailpolicy log (tail) ---", tail(self.mailpolicy.logfile, 60)]
        if self.opts.dovecot:
            lines += ["--- Dovecot log (tail) ---", tail(self.dovecot.logfile, 20)]
        return "\n".join(lines)

    def culprit(self, text: str) -> str:
        names = {"filter": "mailpolicy content filter", "lmtp": "mailpolicy LMTP server",
                 "policy": "mailpolicy policy service", "socketmap": "mailpolicy socketmap",
                 "reinject": "Postfix reinjection smtpd (10026 side)"}
        for key, label in names.items():
            if f":{self.ports[key]}" in text or f"]:{self.ports[key]}" in text:
                return f"{label} (127.0.0.1:{self.ports[key]})"
        return ""

    # ------------------------------------------------------------------ helpers
    def submit(self, login: str, password: str, implicit_tls: bool = False,
               timeout: float = 30) -> smtplib.SMTP:
        """An authenticated SMTP client on the submission service (587 with STARTTLS) or the
        submissions service (465, implicit TLS); raises SMTPAuthenticationError if refused."""
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if implicit_tls:
            s: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"],
                                               local_hostname="client.e2e.test",
                                               timeout=timeout, context=ctx)
        else:
            s = smtplib.SMTP("127.0.0.1", self.ports["submission"],
                             local_hostname="client.e2e.test", timeout=timeout)
            s.ehlo()
            s.starttls(context=ctx)
        try:
            s.ehlo()
            s.login(login, password)
        except BaseException:
            with contextlib.suppress(Exception):
                s.close()
            raise
        return s

    def smtp(self, timeout: float = 30) -> smtplib.SMTP:
        """A connected SMTP client to Postfix's public smtpd (EHLO already sent)."""
        s = smtplib.SMTP("127.0.0.1", self.ports["smtpd"], local_hostname="client.e2e.test",
                         timeout=timeout)
        s.ehlo()
        return s

    def send(self, sender: str, recipients: list[str] | str, message: bytes | str,
             mail_options: tuple[str, ...] = ()) -> dict[str, tuple[int, bytes]]:
        """Send one message into Postfix; returns the refused recipients (smtplib semantics)."""
        rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
        with self.smtp() as s:
            return s.sendmail(sender, rcpts, message, mail_options=list(mail_options))

    def maildir(self, address: str, folder: str = "") -> Path:
        local, _, domain = address.lower().rpartition("@")
        md = self.cfg.maildir_root / domain / local / "Maildir"
        return md / folder if folder else md

    def messages(self, address: str, folder: str = "") -> list[Path]:
        md = self.maildir(address, folder)
        return sorted(p for sub in ("new", "cur") if (md / sub).is_dir()
                      for p in (md / sub).iterdir() if p.is_file())

    def wait_maildir(self, address: str, count: int, folder: str = "",
                     timeout: float = 30) -> list[Path]:
        """Wait until the Maildir of `address` holds at least `count` messages."""
        def enough() -> list[Path] | None:
            found = self.messages(address, folder)
            return found if len(found) >= count else None

        return wait_until(enough, timeout, f"{count} message(s) in {self.maildir(address, folder)}"
                          f" (has {len(self.messages(address, folder))})", self.diagnose)

    def wait_queue_empty(self, timeout: float = 30) -> None:
        wait_until(lambda: self.postfix.queue_files() == 0, timeout,
                   "Postfix's queue to be empty", self.diagnose)

    def wait_log(self, needle: str, timeout: float = 30) -> str:
        """Wait until the Postfix log contains `needle`; returns the first matching line."""
        def found() -> str | None:
            return next((ln for ln in self.postfix.log().splitlines() if needle in ln), None)

        return wait_until(found, timeout, f"{needle!r} in the Postfix log", self.diagnose)

    def imap(self, address: str, password: str) -> imaplib.IMAP4:
        """Logged-in IMAP client (raises imaplib.IMAP4.error when the login is refused)."""
        m = imaplib.IMAP4(self.opts.address, self.ports["imap"], timeout=30)
        try:
            m.login(address, password)
        except BaseException:
            with contextlib.suppress(Exception):
                m.logout()
            raise
        return m

    def doveadm(self, *args: str) -> str:
        """Run doveadm against the private Dovecot (e.g. "quota", "recalc", "-u", addr)."""
        return run(["/usr/bin/doveadm", "-c", str(self.dovecot.conf), *args]).stdout

    @contextlib.asynccontextmanager
    async def store(self) -> Any:
        """The store (same SQLite file as the daemon) for provisioning in a test."""
        from mailpolicy.store import Store

        s = await Store.open(self.cfg.store_url, ip_pool=pool(self.cfg))
        try:
            yield s
        finally:
            await s.close()

    @staticmethod
    async def settle() -> None:
        """Let the daemon's lookup caches notice a change made through the store directly."""
        import asyncio

        await asyncio.sleep(CACHE_SETTLE)


def make_message(sender: str, to: str, subject: str = "e2e", body: str = "hello\n",
                 extra_headers: dict[str, str] | None = None) -> bytes:
    """A small RFC 5322 message with a unique Message-ID (CRLF line ends)."""
    headers = {"From": sender, "To": to, "Subject": subject,
               "Date": email.utils.formatdate(localtime=False),
               "Message-ID": email.utils.make_msgid(domain="client.e2e.test"),
               **(extra_headers or {})}
    text = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n" + body.replace(
        "\r\n", "\n").replace("\n", "\r\n")
    return text.encode()


def plain_postfix_main_cf(addresses: list[str]) -> dict[str, str]:
    """main.cf lines (Options.main_cf, with Options.dovecot_lmtp) for what a plain Postfix +
    Dovecot install does: no content filter, proxy filter or policy service; the domains and
    mailboxes of `addresses` as static maps; delivery by Dovecot's LMTP (which looks each
    recipient up in mailpolicy's store: they must be provisioned there too)."""
    domains = sorted({a.rpartition("@")[2] for a in addresses})
    return {
        "content_filter": "", "smtpd_proxy_filter": "", "receive_override_options": "",
        "smtpd_recipient_restrictions": "", "smtpd_end_of_data_restrictions": "",
        "sender_dependent_default_transport_maps": "",
        "virtual_mailbox_domains": " ".join(domains),
        "virtual_mailbox_maps": "inline:{ " + ", ".join(f"{a}=ok" for a in addresses) + " }",
        "virtual_transport": Dovecot.LMTP_TRANSPORT,
    }


@contextlib.contextmanager
def running(opts: Options | None = None) -> Iterator[Stack]:
    stack = Stack(opts).start()
    try:
        yield stack
    finally:
        stack.stop()


@dataclasses.dataclass
class RemoteMX:
    """An aiosmtpd sink standing in for a remote MX (Postfix reaches it through
    transport_maps): records (envelope sender, recipients, content) of what arrives."""

    messages: list[tuple[str, list[str], bytes]] = dataclasses.field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 Ok: remote"

    def for_rcpt(self, rcpt: str) -> list[tuple[str, list[str], bytes]]:
        return [m for m in self.messages if rcpt in m[1]]

    def wait(self, rcpt: str, timeout: float = 30) -> tuple[str, list[str], bytes]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if found := self.for_rcpt(rcpt):
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"nothing for {rcpt} at the remote MX: {self.messages!r}")


@dataclasses.dataclass
class World:
    """A stack plus the RemoteMX its Postfix sends one outside domain to."""

    stack: Stack
    remote: RemoteMX


@contextlib.contextmanager
def with_remote_mx(stack_factory: Callable[..., Stack], domain: str,
                   ) -> Iterator[tuple[Stack, RemoteMX]]:
    """A stack whose Postfix sends mail for `domain` to a RemoteMX sink on loopback: by
    transport_maps, and (standing in for the domain's MX, which a content_filter without next
    hop looks up) by default_filter_nexthop for the routed reinjection listeners."""
    from aiosmtpd.controller import Controller

    remote = RemoteMX()
    port = free_port()
    ctl = Controller(remote, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield stack_factory(main_cf={
            "transport_maps": f"inline:{{ {{ {domain} = smtp:[127.0.0.1]:{port} }} }}",
            "default_filter_nexthop": f"[127.0.0.1]:{port}"}), remote
    finally:
        ctl.stop()
