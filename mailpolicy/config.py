"""Typed, frozen configuration loaded from TOML: every default lives here."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

DEFAULT_CONFIG_FILE = Path("/etc/mailpolicy/mailpolicy.toml")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)[bB]?\s*$")
SIZE_MAX = 2**63 - 1  # bytes; the largest size any 64-bit signed field holds
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


SIZE_HEADROOM = 64 * 1024  # bytes of headers our own hops may add to a message


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the key."""


class Size(int):
    """A byte count written with binary units as Dovecot does (`100M` = 104857600)."""


def parse_size(value: str | int) -> int:
    """Parse `500M`, `2G`, `1024` or an int into bytes; raise ValueError otherwise (also
    above SIZE_MAX, what a signed 64-bit field holds: the store's, Dovecot's, Postfix's)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size: {value}")
        n = value
    else:
        m = _SIZE_RE.match(value) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"not a size: {value!r} (use e.g. 500M, 2G, 1024)")
        digits = m.group(1).lstrip("0") or "0"
        n = (int(digits) * _UNITS[m.group(2).lower()] if len(digits) <= 20
             else SIZE_MAX + 1)  # never int() a huge digit string
    if n > SIZE_MAX:
        raise ValueError(f"size too large: {value!r} (at most {SIZE_MAX // 1024**4}T)")
    return n


def format_size(n: int | None) -> str:
    """Format bytes the way parse_size reads them back (largest exact unit)."""
    if n is None:
        return "unlimited"
    for unit in ("T", "G", "M", "K"):
        mult = _UNITS[unit.lower()]
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Size:
        try:
            return Size(parse_size(obj))
        except ValueError as e:
            raise ValueError(str(e)) from None
    raise TypeError(f"no decoder for {type_!r}")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Listen(_Section, frozen=True):
    """host:port of each listener (loopback by default)."""

    policy: str = "127.0.0.1:10040"
    socketmap: str = "127.0.0.1:10041"
    filter: str = "127.0.0.1:10025"
    lmtp: str = "127.0.0.1:10024"
    lmtp_socket: str = ""
    filter_originating: str = "127.0.0.1:10027"  # the filter for submitted mail (DKIM signing)


class Paths(_Section, frozen=True):
    state_dir: str = "var"
    maildir_root: str = ""  # "" = {state_dir}/mail
    admin_socket: str = ""  # "" = {state_dir}/admin.sock


class Store(_Section, frozen=True):
    url: str = ""  # "" = sqlite+aiosqlite:///{state_dir}/mailpolicy.db
    busy_timeout_ms: int = 5000
    directory_in_memory: bool = True  # SQLite: policy/socketmap answer from memory


class Admin(_Section, frozen=True):
    group: str = "mailpolicy"
    socket_mode: int = 0o660
    postmaster: str = ""  # postmaster@/abuse@ target of new domains; "" = their first mailbox
    min_password_length: int = 8  # mailbox passwords shorter than this are refused


class Outbound(_Section, frozen=True):
    ip_pool: tuple[str, ...] = ()  # empty = the host's own addresses


class ClientEndpoint(_Section, frozen=True):
    host: str = "mail.example.com"
    port: int = 993
    security: Literal["ssl", "starttls", "none"] = "ssl"


class ClientSettings(_Section, frozen=True):
    imap: ClientEndpoint = ClientEndpoint(host="mail.example.com", port=993, security="ssl")
    pop3: ClientEndpoint = ClientEndpoint(host="mail.example.com", port=995, security="ssl")
    smtp: ClientEndpoint = ClientEndpoint(host="mail.example.com", port=587, security="starttls")
    pop3_enabled: bool = False  # Dovecot serves POP3 too (dovecot-pop3d): shown to users


class Submission(_Section, frozen=True):
    """Authenticated submission (587 STARTTLS, 465 implicit TLS) with Dovecot SASL."""

    enabled: bool = True
    submission: str = "submission"  # master.cf service name or host:port; "" = none
    submissions: str = "submissions"  # implicit TLS (RFC 8314); "" = none
    postfix_queue_directory: str = "/var/spool/postfix"  # Dovecot's auth socket: private/auth


class Sending(_Section, frozen=True):
    """Send limits for authenticated users, per hour (0 = no limit)."""

    messages_per_hour: int = 200
    recipients_per_hour: int = 1000
    domain_messages_per_hour: int = 2000
    domain_recipients_per_hour: int = 10000


class Dkim(_Section, frozen=True):
    ed25519: bool = False  # also sign with an Ed25519 key (RFC 8463), dual-signed
    rotation_delay_hours: float = 48.0  # dkim-rotate: sign with the new key after this long


class Limits(_Section, frozen=True):
    message_size_limit: Size = Size(50 * 1024**2)
    policy_request_max: Size = Size(64 * 1024)
    socketmap_request_max: Size = Size(100 * 1024)
    attachment_max: Size = Size(5 * 1024**2)
    max_concurrency: int = 64
    lmtp_workers: int = 0  # LMTP processes: 0 = one per CPU core, 1 = in the main process
    policy_workers: int = 0  # policy service processes: the same
    # Postfix smtpd's smtpd_timeout (per request) and smtpd_min_data_rate, for LMTP and filter
    command_timeout_seconds: float = 300.0
    min_data_rate: int = 500  # bytes/s that extend the DATA deadline
    lmtp_max_connections: int = 256  # per listener (and per LMTP worker); beyond: 421 4.3.2
    filter_max_connections: int = 256
    filter_spool_threshold: Size = Size(1024**2)  # a bigger message is kept in a spool file
    filter_messages_in_memory: int = 32  # more at once are kept in spool files
    policy_max_connections: int = 1000  # per policy process; beyond: closed without a reply
    policy_request_timeout_seconds: float = 10.0  # from a request's first byte to its end


class Policy(_Section, frozen=True):
    reject_text: str = "Recipient address rejected: mailbox does not exist"
    quota_code: Literal[552, 452] = 552
    fallback_action: str = "DEFER_IF_PERMIT 4.3.0 Service temporarily unavailable"
    deadline_seconds: float = 2.0


class Reinject(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 10026
    timeout_seconds: float = 60.0
    # routed reinjection: the smtpd for the i-th pool address (sorted) listens on this port + i
    # and sends straight out from that address (copies and autoreplies); 0 = none
    routed_port_base: int = 10100


class Filter(_Section, frozen=True):
    mode: Literal["after-queue", "before-queue"] = "after-queue"
    authorized_xforward: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_passes: int = 5
    srs_secret: str = ""  # "" = generated once and kept in {state_dir}/srs.secret
    srs_domain: str = ""  # "" = Postfix's myhostname, else the host's FQDN
    hostname: str = ""  # "" = the host's name


class Dns(_Section, frozen=True):
    nameservers: tuple[str, ...] = ()  # empty = the system's resolv.conf
    timeout_seconds: float = 3.0
    cache_size: int = 10000


class Dmarc(_Section, frozen=True):
    authserv_id: str = ""  # "" = filter.hostname
    after_queue_action: Literal["quarantine", "discard"] = "quarantine"
    temperror_action: Literal["accept", "defer"] = "accept"
    trusted_forwarders: tuple[str, ...] = ()  # client networks whose DMARC failures are forgiven
    trusted_arc_sealers: tuple[str, ...] = ()
    default_policy: Literal["none", "quarantine", "reject"] = "none"
    default_rua: str = ""
    update_server: str = ""  # "host:port" of an RFC 2136 server; "" = do not publish
    update_zone: str = ""
    tsig_name: str = ""
    tsig_secret: str = ""
    tsig_algorithm: str = "hmac-sha256"
    check_deadline_seconds: float = 25.0  # whole SPF+DKIM+DMARC check; past it = temperror
    verify_processes: int = 0  # DKIM worker processes; 0 = in-process (large messages in a thread)


class Autoreply(_Section, frozen=True):
    interval_days: int = 7
    timezone: str = "UTC"
    check_recipient: bool = True
    send_attempts: int = 3


class Cluster(_Section, frozen=True):
    """Many nodes on one PostgreSQL: this host's node name and what other nodes reach here."""

    node: str = ""  # "" = the one implicit node: no cluster, nothing to configure
    lmtp: str = ""  # host:port other nodes deliver to; "" = listen.lmtp
    imap: str = ""  # host:port of this node's Dovecot IMAP, for proxies on other nodes
    pop3_port: int = 110  # this node's Dovecot POP3 port, for proxies on other nodes
    heartbeat_seconds: float = 5.0  # how often the daemon marks its node as seen
    doveadm_port: int = 0  # Dovecot's doveadm server port on every node; 0 = no `mailbox move`
    doveadm_password: str = ""  # Dovecot's doveadm_password, the same on every node
    doveadm_command: tuple[str, ...] = ("doveadm",)  # e.g. ["doveadm", "-c", "/path.conf"]


class Log(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool = False


class Config(_Section, frozen=True):
    listen: Listen = Listen()
    paths: Paths = Paths()
    store: Store = Store()
    admin: Admin = Admin()
    outbound: Outbound = Outbound()
    client_settings: ClientSettings = ClientSettings()
    submission: Submission = Submission()
    sending: Sending = Sending()
    dkim: Dkim = Dkim()
    limits: Limits = Limits()
    policy: Policy = Policy()
    reinject: Reinject = Reinject()
    filter: Filter = Filter()
    dns: Dns = Dns()
    dmarc: Dmarc = Dmarc()
    autoreply: Autoreply = Autoreply()
    cluster: Cluster = Cluster()
    log: Log = Log()
    base_dir: str = ""  # directory relative paths are taken from; set by load()

    # ---- derived values (one place) ----
    def _abs(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else Path(self.base_dir or os.getcwd()) / path

    @property
    def state_dir(self) -> Path:
        return self._abs(self.paths.state_dir)

    @property
    def maildir_root(self) -> Path:
        return self._abs(self.paths.maildir_root) if self.paths.maildir_root else (
            self.state_dir / "mail")

    @property
    def lmtp_socket(self) -> Path | None:
        """LMTP's Unix socket (listen.lmtp_socket), None when there is none."""
        return self._abs(self.listen.lmtp_socket) if self.listen.lmtp_socket else None

    @property
    def admin_socket(self) -> Path:
        return self._abs(self.paths.admin_socket) if self.paths.admin_socket else (
            self.state_dir / "admin.sock")

    @property
    def internal_size_limit(self) -> int:
        """What the filter, the reinjection smtpd and LMTP accept: Postfix's limit plus room
        for the headers added on the way (Received, Authentication-Results, trace), so a message
        Postfix took is never refused by a later hop of our own."""
        return int(self.limits.message_size_limit) + SIZE_HEADROOM

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite+aiosqlite:///{self.state_dir / 'mailpolicy.db'}"

    @property
    def hostname(self) -> str:
        import socket

        return self.filter.hostname or socket.gethostname()


def split_hostport(value: str, key: str = "") -> tuple[str, int]:
    """`127.0.0.1:10040` or `[::1]:10040` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise ConfigError(f"{key or value}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def _validate(cfg: Config) -> None:
    for name in ("policy", "socketmap", "filter", "lmtp", "filter_originating"):
        if name == "lmtp" and not cfg.listen.lmtp and cfg.listen.lmtp_socket:
            continue  # LMTP on its Unix socket only
        split_hostport(getattr(cfg.listen, name), f"listen.{name}")
    for i, ns in enumerate(cfg.dns.nameservers):
        if ":" in ns and not ns.startswith("["):
            split_hostport(ns, f"dns.nameservers[{i}]")
    for key in ("messages_per_hour", "recipients_per_hour", "domain_messages_per_hour",
                "domain_recipients_per_hour"):
        if getattr(cfg.sending, key) < 0:
            raise ConfigError(f"sending.{key}: must be 0 (no limit) or more")
    if cfg.filter.max_passes < 1:
        raise ConfigError("filter.max_passes: must be at least 1")
    for key in ("lmtp_workers", "policy_workers"):
        if getattr(cfg.limits, key) < 0:
            raise ConfigError(f"limits.{key}: must be 0 (one per CPU core) or more")
    for key in ("command_timeout_seconds", "lmtp_max_connections", "filter_max_connections",
                "policy_max_connections", "policy_request_timeout_seconds",
                "filter_messages_in_memory"):
        if getattr(cfg.limits, key) <= 0:
            raise ConfigError(f"limits.{key}: must be more than 0")
    if cfg.limits.min_data_rate < 0:
        raise ConfigError("limits.min_data_rate: must be 0 (no extension) or more")
    if not 0 <= cfg.reinject.routed_port_base < 65536:
        raise ConfigError("reinject.routed_port_base: must be a port number (0 = none)")
    if cfg.autoreply.interval_days < 1:
        raise ConfigError("autoreply.interval_days: must be at least 1")
    _validate_cluster(cfg.cluster)
    if cfg.dmarc.update_server:
        split_hostport(cfg.dmarc.update_server, "dmarc.update_server")
    for i, net in enumerate(cfg.dmarc.trusted_forwarders):
        import ipaddress

        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"dmarc.trusted_forwarders[{i}]: not a network: {net!r}") from None
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(cfg.autoreply.timezone)
    except Exception:
        raise ConfigError(
            f"autoreply.timezone: unknown time zone {cfg.autoreply.timezone!r}") from None
    import ipaddress

    for i, ip in enumerate(cfg.outbound.ip_pool):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"outbound.ip_pool[{i}]: not an IP address: {ip!r}") from None


NODE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _validate_cluster(c: Cluster) -> None:
    if c.node and not NODE_NAME.match(c.node):
        raise ConfigError(f"cluster.node: {c.node!r} is not a node name (a-z, 0-9, '-', "
                          "at most 63)")
    for key in ("lmtp", "imap"):
        if getattr(c, key):
            split_hostport(getattr(c, key), f"cluster.{key}")
    if not 0 < c.pop3_port < 65536:
        raise ConfigError("cluster.pop3_port: must be a port number")
    if c.heartbeat_seconds <= 0:
        raise ConfigError("cluster.heartbeat_seconds: must be more than 0")
    if not 0 <= c.doveadm_port < 65536:
        raise ConfigError("cluster.doveadm_port: must be a port number (0 = none)")
    if c.doveadm_port and not c.doveadm_password:
        raise ConfigError("cluster.doveadm_password: needed with cluster.doveadm_port")
    if not c.doveadm_command:
        raise ConfigError("cluster.doveadm_command: must name the doveadm program")


def from_dict(data: dict[str, Any], base_dir: str = "") -> Config:
    """Build a Config from a parsed TOML mapping; errors name the key."""
    try:
        cfg = msgspec.convert(data, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        msg = str(e)
        m = re.search(r"at `\$\.(.+?)`", msg)
        key = m.group(1) if m else ""
        m2 = re.search(r"unknown field `(.+?)`", msg)
        if m2:
            key = f"{key}.{m2.group(1)}" if key else m2.group(1)
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    cfg = msgspec.structs.replace(cfg, base_dir=base_dir or os.getcwd())
    _validate(cfg)
    return cfg


def load(path: str | Path | None = None) -> Config:
    """Load the config: the given file, else /etc/mailpolicy/mailpolicy.toml, else defaults."""
    if path is None:
        if not DEFAULT_CONFIG_FILE.exists():
            return from_dict({})
        path = DEFAULT_CONFIG_FILE
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    # relative paths in a config file are relative to the working directory, as for defaults
    return from_dict(data, base_dir=os.getcwd())
