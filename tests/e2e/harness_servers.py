"""The private Postfix and Dovecot instances of the e2e harness: config, start, stop, logs."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness_mailpolicy import HarnessError, port_open, tail, unix_open, wait_until

from mailpolicy import config as config_mod
from mailpolicy.deploy import dovecot as dovecotconf

HOSTNAME = "mx.e2e.test"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def run(cmd: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return res


@dataclass
class Options:
    """What a test may change about the stack."""

    filter_mode: str = "after-queue"
    mynetworks: str = ""  # the public smtpd's; "" = loopback clients are "the internet"
    main_cf: dict[str, str] = field(default_factory=dict)  # extra/overriding main.cf lines
    master_cf: list[str] = field(default_factory=list)  # extra master.cf entries
    mailpolicy: dict[str, Any] = field(default_factory=dict)  # merged into the mailpolicy config
    dovecot: bool = True
    # also Dovecot's own LMTP (mail_fsync = always) on a Unix socket in Postfix's queue
    # directory (Dovecot.LMTP_TRANSPORT), as a plain Postfix + Dovecot install delivers
    dovecot_lmtp: bool = False
    address: str = "127.0.0.1"  # loopback address of what other nodes reach: LMTP, Dovecot
    run_as: str = ""  # "" = $MAILPOLICY_E2E_USER, else `mailpolicy` if it exists, else `nobody`


def self_signed_certificate(directory: Path, name: str, stem: str = "default",
                            ) -> tuple[Path, Path]:
    """`stem`.key / `stem`.pem: a self-signed certificate for `name` (key mode 0600)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)  # read by the Postfix master (root)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class Postfix:
    """One private Postfix instance: config dir, queue and log under `work`."""

    def __init__(self, work: Path, smtpd_port: int) -> None:
        self.work = work
        self.config_dir = work / "etc"
        self.queue_dir = work / "spool"
        self.data_dir = work / "data"
        self.maillog = work / "maillog"
        self.smtpd_port = smtpd_port
        self.fragments: dict[str, Any] = {}

    def base_main(self, opts: Options) -> dict[str, str]:
        w = self.work
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": HOSTNAME,
            "mydomain": "e2e.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": opts.mynetworks,
            "relayhost": "",
            "disable_dns_lookups": "yes",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(w),
            "smtputf8_enable": "yes",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
            "delay_warning_time": "0",
            # the default certificate (STARTTLS, and the submission services need one)
            "smtpd_tls_chain_files": f"{w / 'tls' / 'default.key'},{w / 'tls' / 'default.pem'}",
        }

    def base_master(self) -> list[str]:
        rows = [
            (f"127.0.0.1:{self.smtpd_port}", "inet", "n", "-", "smtpd"),
            ("pickup", "unix", "n", "1", "pickup"), ("cleanup", "unix", "n", "0", "cleanup"),
            ("qmgr", "unix", "n", "1", "qmgr"), ("rewrite", "unix", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "0", "bounce"), ("defer", "unix", "-", "0", "bounce"),
            ("trace", "unix", "-", "0", "bounce"), ("verify", "unix", "-", "1", "verify"),
            ("flush", "unix", "n", "0", "flush"), ("proxymap", "unix", "-", "-", "proxymap"),
            ("proxywrite", "unix", "-", "1", "proxymap"), ("smtp", "unix", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "smtp"), ("showq", "unix", "n", "-", "showq"),
            ("error", "unix", "-", "-", "error"), ("retry", "unix", "-", "-", "error"),
            ("discard", "unix", "-", "-", "discard"), ("lmtp", "unix", "-", "-", "lmtp"),
            ("anvil", "unix", "-", "1", "anvil"), ("scache", "unix", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "1", "postlogd"),
            ("tlsmgr", "unix", "-", "1", "tlsmgr"),
        ]
        wake = {"pickup": "60", "qmgr": "300", "tlsmgr": "1000?"}
        return [f"{s:<22} {t:<10} {p:<3} -   n   {wake.get(s, '-'):<4} {m:<4} {c}"
                for s, t, p, m, c in rows]

    def write_config(self, opts: Options, fragments: dict[str, Any]) -> None:
        self.fragments = fragments
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        self_signed_certificate(self.work / "tls", HOSTNAME)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)  # the queue directory stays root's
        main = {**self.base_main(opts), **fragments["main_cf"], **opts.main_cf}
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items()))
        master = self.base_master() + list(fragments["master_cf"]) + list(opts.master_cf)
        (self.config_dir / "master.cf").write_text("\n".join(master) + "\n")

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # postfix(1) reports its errors to syslog only, unless stderr is a terminal
        cmd = " ".join(["/usr/sbin/postfix", "-c", str(self.config_dir), *args])
        return run(["script", "-qec", cmd, "/dev/null"], check=check)

    def start(self) -> None:
        # `postfix check` creates the missing queue directories with the right owners
        # (faster than `set-permissions`, which walks every file Postfix installed)
        res = self.postfix("check", check=False)
        if res.returncode != 0 or "fatal" in res.stdout:
            raise HarnessError(f"postfix check failed:\n{res.stdout}{res.stderr}")
        self.postfix("start")
        wait_until(lambda: port_open(self.smtpd_port), START_TIMEOUT,
                   f"Postfix smtpd on 127.0.0.1:{self.smtpd_port}",
                   lambda: f"Postfix log:\n{tail(self.maillog)}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the master stops its children and exits
        gone = lambda: not Path(f"/proc/{pid}").exists()  # noqa: E731
        with contextlib.suppress(HarnessError):
            wait_until(gone, STOP_TIMEOUT, "Postfix master to exit")
        if not gone():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def queue(self) -> list[dict[str, Any]]:
        """Messages in the queue (postqueue -j): queue_id, queue_name, recipients with reasons."""
        res = run(["/usr/sbin/postqueue", "-c", str(self.config_dir), "-j"], check=False)
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def queue_files(self) -> int:
        """Number of queued messages, counted on disk (works even when postqueue cannot run)."""
        return sum(1 for q in ("maildrop", "incoming", "active", "deferred", "hold")
                   for p in (self.queue_dir / q).rglob("*") if p.is_file())

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""


class Dovecot:
    """Dovecot IMAP on a free port over the same Maildirs and mailpolicy's SQLite store."""

    LMTP_SOCKET = "private/dovecot-lmtp"  # relative to Postfix's queue directory
    LMTP_TRANSPORT = f"lmtp:unix:{LMTP_SOCKET}"  # Postfix's virtual_transport to it

    def __init__(self, work: Path, imap_port: int, address: str = "127.0.0.1",
                 lmtp_queue_dir: Path | None = None) -> None:
        self.work = work
        self.imap_port = imap_port
        self.address = address
        # Postfix's queue directory when Dovecot also serves LMTP there (Options.dovecot_lmtp)
        self.lmtp_queue_dir = lmtp_queue_dir
        self.conf = work / "dovecot.conf"
        self.logfile = work / "dovecot.log"
        self.proc: subprocess.Popen | None = None

    def write_config(self, cfg: config_mod.Config, user: str, group: str, uid: int) -> None:
        (self.work / "run").mkdir(parents=True, exist_ok=True)
        (self.work / "state").mkdir(parents=True, exist_ok=True)
        sql = self.work / dovecotconf.SQL_CONF_NAME
        files = dovecotconf.render(cfg, sql_conf_path=str(sql),
                                   owner=dovecotconf.DovecotUser(user, group, uid))
        for name, text in files.items():  # the SQL args files, beside each other
            if name != dovecotconf.CONF_NAME:
                (self.work / name).write_text(text)
        (self.work / "nodelay.passwd").write_text("127.0.0.1:::::::nodelay=yes\n")
        base = f"""\
instance_name = mailpolicy-e2e-{self.imap_port}
base_dir = {self.work}/run
state_dir = {self.work}/state
log_path = {self.logfile}
listen = {self.address}
protocols = imap{" lmtp" if self.lmtp_queue_dir is not None else ""}
ssl = no
disable_plaintext_auth = no
auth_verbose = yes
auth_failure_delay = 0
# no auth penalty (growing delays after failed logins) for the test clients on loopback:
# a first passdb, keyed by the client IP, that only adds nodelay=yes
passdb {{
  driver = passwd-file
  args = username_format=%{{rip}} {self.work}/nodelay.passwd
  default_fields = noauthenticate=y nodelay=yes
  result_success = continue
  result_failure = continue
  result_internalfail = continue
}}
service imap-login {{
  inet_listener imap {{
    address = {self.address}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        self.conf.write_text(base + self._lmtp_conf() + files[dovecotconf.CONF_NAME])
        res = run(["/usr/bin/doveconf", "-c", str(self.conf), "-n"], check=False)
        if res.returncode != 0:
            raise HarnessError(f"doveconf rejected the Dovecot config:\n{res.stderr}")

    def _lmtp_conf(self) -> str:
        """The LMTP service for Postfix's lmtp client, as Dovecot's LMTP docs set it up, and
        the same durability as mailpolicy's LMTP (fsync before the 250)."""
        if self.lmtp_queue_dir is None:
            return ""
        return f"""\
mail_fsync = always
service lmtp {{
  unix_listener {self.lmtp_queue_dir / self.LMTP_SOCKET} {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
"""

    def start(self) -> None:
        out = open(self.work / "dovecot.out", "wb")
        self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(self.conf)],
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"Dovecot exited ({self.proc.returncode}):\n"
                                   f"{tail(self.work / 'dovecot.out')}\n{tail(self.logfile)}")
            return port_open(self.imap_port, self.address)

        wait_until(up, START_TIMEOUT, f"Dovecot IMAP on {self.address}:{self.imap_port}",
                   lambda: tail(self.logfile))
        if self.lmtp_queue_dir is not None:
            sock = self.lmtp_queue_dir / self.LMTP_SOCKET
            wait_until(lambda: unix_open(sock), START_TIMEOUT, f"Dovecot LMTP on {sock}",
                       lambda: tail(self.logfile))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
