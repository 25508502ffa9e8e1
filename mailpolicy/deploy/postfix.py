"""Pure generator of the Postfix main.cf and master.cf fragments that wire Postfix to mailpolicy."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

from mailpolicy.config import Config, split_hostport
from mailpolicy.core.cluster import LMTP_TRANSPORT
from mailpolicy.core.outbound import pool_warnings, routed_ports, transport_name
from mailpolicy.deploy.tlsmaps import POSTFIX_MAP

FILTER_TRANSPORT = "mailpolicy-filter"
FILTER_MAXPROC = 20  # Postfix's default per-destination concurrency; the 10026 smtpd allows 100
POSTFIX_MAILBOX_SIZE_DEFAULT = 51200000  # Postfix's mailbox_size_limit/virtual_mailbox_limit
POLICY_TIMEOUT_FLOOR = 5  # seconds; Postfix's own default (100s) would stall every client

DEFAULT_ACTION_TEXT = "451 4.3.5 Recipient policy service unavailable, try again later"

# What each main.cf parameter is for (rendered as comments in the text form).
_MAIN_COMMENTS = {
    "smtpd_relay_restrictions": "relay control: only our own networks (and SASL users) relay",
    "smtpd_recipient_restrictions": (
        "the policy service first, so it also sees clients from mynetworks; it never answers OK"),
    "smtpd_end_of_data_restrictions": (
        "the policy service again at end of data, where Postfix knows the real size: a "
        "message that does not fit is refused in the client's session (no bounce)"),
    "smtpd_policy_service_timeout": "short: mailpolicy answers within policy.deadline_seconds",
    "smtpd_policy_service_default_action": "when mailpolicy is unreachable: defer, never accept",
    "virtual_mailbox_domains": "our domains, from mailpolicy's store (socketmap)",
    "virtual_mailbox_maps": "every address Postfix should accept: mailboxes, aliases, catch-alls",
    "sender_dependent_default_transport_maps": "outbound smtp transport bound to the domain's IP",
    "virtual_transport": "final delivery into Maildir by mailpolicy's LMTP server",
    "transport_maps": "cluster: mailboxes at home on another node go to that node's LMTP",
    "content_filter": "every queued message passes mailpolicy's filter (FILTER_README sandwich)",
    "receive_override_options": "address mappings happen after the filter (on the 10026 smtpd)",
    "smtpd_proxy_filter": "before-queue mode: the filter answers inside the client's session",
    "message_size_limit": "limits.message_size_limit (the filter and LMTP use the same number)",
    "mailbox_size_limit": "must not be below message_size_limit (Postfix refuses to start)",
    "virtual_mailbox_limit": "must not be below message_size_limit (Postfix refuses to start)",
    f"{FILTER_TRANSPORT}_destination_concurrency_limit": "as many as the filter's maxproc",
    "mailpolicy_submission_recipient_restrictions": (
        "submission (587/465): the policy service, then only authenticated clients relay"),
    "mailpolicy_submission_data_restrictions": (
        "submission: send limits per mailbox and domain (policy service, sasl_username)"),
    "mailpolicy_submission_sender_login_maps": (
        "who may send as which address: mailboxes, their aliases, granted addresses"),
    "tls_server_sni_maps": (
        "per-domain certificates (SNI); `postfix reload` after a certificate change"),
}


def _inet(hostport: str, key: str) -> str:
    """`host:port` in Postfix inet syntax (`[::1]:port` for IPv6)."""
    host, port = split_hostport(hostport, key)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _nexthop(hostport: str, key: str) -> str:
    """`[host]:port`: a next hop without MX lookup."""
    host, port = split_hostport(hostport, key)
    return f"[{host}]:{port}"


def _socketmap(cfg: Config, name: str) -> str:
    return f"socketmap:inet:{_inet(cfg.listen.socketmap, 'listen.socketmap')}:{name}"


def _lmtp_nexthop(cfg: Config) -> str:
    """LMTP's Unix socket when there is one (only Postfix can reach it), else its TCP port.
    Our lmtp transport runs without chroot, so an absolute path works as it is."""
    if cfg.lmtp_socket is not None:
        return f"{LMTP_TRANSPORT}:unix:{cfg.lmtp_socket}"
    return f"{LMTP_TRANSPORT}:inet:{_inet(cfg.listen.lmtp, 'listen.lmtp')}"


def _policy_timeout(cfg: Config) -> int:
    return max(POLICY_TIMEOUT_FLOOR, int(cfg.policy.deadline_seconds * 3 + 0.999))


def _filter_done_timeout(cfg: Config) -> int:
    # Longer than the filter's own reinjection deadline, so the filter always answers first
    # (a timeout here makes Postfix deliver the message twice).
    return max(600, int(cfg.reinject.timeout_seconds * 2 + 60))


def _reinject_is_v6(cfg: Config) -> bool:
    try:
        return ipaddress.ip_address(cfg.reinject.host).version == 6
    except ValueError:
        return False


def main_cf(cfg: Config, outbound_ips: Iterable[str]) -> dict[str, str]:
    """The main.cf parameters mailpolicy needs, in a stable order."""
    del outbound_ips  # the transports are master.cf entries; main.cf needs no per-IP setting
    policy = f"inet:{_inet(cfg.listen.policy, 'listen.policy')}"
    size = int(cfg.limits.message_size_limit)
    out: dict[str, str] = {
        "smtpd_relay_restrictions": (
            "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"),
        "smtpd_recipient_restrictions": (
            f"check_policy_service {policy}, permit_mynetworks, permit_sasl_authenticated, "
            "reject_unauth_destination"),
        "smtpd_end_of_data_restrictions": f"check_policy_service {policy}",
        "smtpd_policy_service_timeout": f"{_policy_timeout(cfg)}s",
        "smtpd_policy_service_default_action": DEFAULT_ACTION_TEXT,
        "virtual_mailbox_domains": _socketmap(cfg, "domains"),
        "virtual_mailbox_maps": _socketmap(cfg, "mailboxes"),
        "sender_dependent_default_transport_maps": _socketmap(cfg, "sender-transport"),
        "virtual_transport": _lmtp_nexthop(cfg),
    }
    if cfg.cluster.node:
        out["transport_maps"] = _socketmap(cfg, "transport")
    filt = _nexthop(cfg.listen.filter, "listen.filter")
    if cfg.filter.mode == "before-queue":
        out["smtpd_proxy_filter"] = _inet(cfg.listen.filter, "listen.filter")
    else:
        out["content_filter"] = f"{FILTER_TRANSPORT}:{filt}"
        out["receive_override_options"] = "no_address_mappings"
    out["message_size_limit"] = str(size)
    out["mailbox_size_limit"] = str(max(size, POSTFIX_MAILBOX_SIZE_DEFAULT))
    out["virtual_mailbox_limit"] = str(max(size, POSTFIX_MAILBOX_SIZE_DEFAULT))
    if cfg.filter.mode != "before-queue":
        out[f"{FILTER_TRANSPORT}_destination_concurrency_limit"] = str(_filter_maxproc(cfg))
    # texthash lists file names and Postfix reads the files (never serve keys by socketmap)
    out["tls_server_sni_maps"] = f"texthash:{cfg.state_dir / POSTFIX_MAP}"
    if cfg.submission.enabled:
        # referenced as $name from the submission services (no spaces in master.cf -o values)
        out["mailpolicy_submission_recipient_restrictions"] = (
            f"check_policy_service {policy}, permit_sasl_authenticated, reject")
        out["mailpolicy_submission_data_restrictions"] = f"check_policy_service {policy}"
        out["mailpolicy_submission_sender_login_maps"] = _socketmap(cfg, "senders")
    return out


SASL_PATH = "private/auth"  # queue-relative: Dovecot's auth listener (chroot-safe)


def submission_services(cfg: Config) -> list[tuple[str, bool]]:
    """(master.cf service name or host:port, implicit TLS) of the submission services."""
    sub = cfg.submission
    if not sub.enabled:
        return []
    out = []
    for value, wrapper, key in ((sub.submission, False, "submission.submission"),
                                (sub.submissions, True, "submission.submissions")):
        if not value:
            continue
        out.append((_inet(value, key) if ":" in value else value, wrapper))
    return out


def _submission_entry(cfg: Config, service: str, wrapper: bool) -> str:
    name = "submissions" if wrapper else "submission"
    tls = ["smtpd_tls_wrappermode=yes"] if wrapper else ["smtpd_tls_security_level=encrypt"]
    # before-queue: the From/owner check answers the user's client (553) inside the session
    originating = _inet(cfg.listen.filter_originating, "listen.filter_originating")
    return _entry(_row(service, "inet", "n", "-", "smtpd"), [
        f"syslog_name=postfix/{name}",
        *tls,
        "smtpd_tls_auth_only=yes",
        "smtpd_sasl_auth_enable=yes",
        "smtpd_sasl_type=dovecot",
        f"smtpd_sasl_path={SASL_PATH}",
        "smtpd_sasl_security_options=noanonymous",
        "smtpd_reject_unlisted_recipient=no",
        "smtpd_client_restrictions=permit_sasl_authenticated,reject",
        "smtpd_helo_restrictions=",
        "smtpd_sender_login_maps=$mailpolicy_submission_sender_login_maps",
        "smtpd_sender_restrictions=reject_sender_login_mismatch",
        "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        "smtpd_recipient_restrictions=$mailpolicy_submission_recipient_restrictions",
        "smtpd_data_restrictions=$mailpolicy_submission_data_restrictions",
        "smtpd_policy_service_policy_context=submission",
        f"smtpd_proxy_filter={originating}",
        "content_filter=",
        "milter_macro_daemon_name=ORIGINATING",
    ])


def _filter_maxproc(cfg: Config) -> int:
    return max(1, min(FILTER_MAXPROC, cfg.limits.max_concurrency))


def _entry(head: str, options: list[str]) -> str:
    return "\n".join([head, *(f"  -o {o}" for o in options)])


def _row(service: str, kind: str, private: str, maxproc: str, command: str) -> str:
    # service type private unpriv chroot wakeup maxproc command (chroot off: no copied files)
    return f"{service:<18} {kind:<5} {private:<3} -   n   -   {maxproc:<4} {command}"


def _reinject_address(cfg: Config, port: int) -> str:
    """The master.cf service name of a reinjection smtpd on reinject.host."""
    host = cfg.reinject.host
    return f"[{host}]:{port}" if _reinject_is_v6(cfg) else f"{host}:{port}"


def _reinject_options(cfg: Config, syslog: str, content_filter: str) -> list[str]:
    """FILTER_README's options of the smtpd that takes filtered mail back (no filter there,
    or mail loops), with `content_filter` naming where its mail goes next ("" = the usual
    routing)."""
    nets = "[::1]/128" if _reinject_is_v6(cfg) else "127.0.0.0/8"
    return [
        f"syslog_name=postfix/{syslog}",
        f"message_size_limit={cfg.internal_size_limit}",
        f"content_filter={content_filter}",
        "smtpd_proxy_filter=",
        "receive_override_options=no_unknown_recipient_checks,no_header_body_checks,"
        "no_milters",
        "smtpd_helo_restrictions=",
        "smtpd_client_restrictions=",
        "smtpd_sender_restrictions=",
        "smtpd_relay_restrictions=",
        "smtpd_recipient_restrictions=permit_mynetworks,reject",
        "smtpd_data_restrictions=",
        "smtpd_end_of_data_restrictions=",
        f"mynetworks={nets}",
        f"smtpd_authorized_xforward_hosts={nets}",
        "smtpd_delay_reject=no",
        "smtpd_error_sleep_time=0",
        "smtpd_soft_error_limit=1001",
        "smtpd_hard_error_limit=1000",
        "smtpd_client_connection_count_limit=0",
        "smtpd_client_connection_rate_limit=0",
        "smtpd_milters=",
        "local_header_rewrite_clients=",
        "smtpd_sasl_auth_enable=no",
        "smtpd_tls_security_level=none",
    ]


def master_cf(cfg: Config, outbound_ips: Iterable[str]) -> list[str]:
    """The master.cf entries mailpolicy needs (one string per entry, with its -o lines)."""
    ips = tuple(outbound_ips)
    entries = [_entry(_row(_reinject_address(cfg, cfg.reinject.port), "inet", "n", "-",
                           "smtpd"), _reinject_options(cfg, "mailpolicy-reinject", ""))]
    # routed reinjection: what the filter and the autoresponder send to another domain on
    # behalf of one of ours goes straight to that domain's outbound transport (a filter
    # without next hop delivers to the recipient domain: default_filter_nexthop is empty)
    for ip, port in routed_ports(cfg, ips).items():
        name = transport_name(ip)
        entries.append(_entry(_row(_reinject_address(cfg, port), "inet", "n", "-", "smtpd"),
                              _reinject_options(cfg, f"{name}-reinject", f"{name}:")))
    # flags=X: mailpolicy's LMTP server delivers finally ("delivered", not "relayed", in DSNs;
    # replaces the obsolete lmtp_assume_final). It adds Return-Path/Delivered-To itself.
    # No -o lines here: they would follow flags=X, and daemon options must come first.
    entries.append(_row(LMTP_TRANSPORT, "unix", "-", "-", "lmtp flags=X"))
    if cfg.filter.mode != "before-queue":
        entries.append(_entry(
            _row(FILTER_TRANSPORT, "unix", "-", str(_filter_maxproc(cfg)), "smtp"), [
                "syslog_name=postfix/mailpolicy-filter",
                "smtp_send_xforward_command=yes",
                f"smtp_data_done_timeout={_filter_done_timeout(cfg)}s",
                "disable_dns_lookups=yes",
                "disable_mime_output_conversion=yes",
                "smtp_generic_maps=",
                "smtp_header_checks=",
                "smtp_tls_security_level=none",
            ]))
    for service, wrapper in submission_services(cfg):
        entries.append(_submission_entry(cfg, service, wrapper))
    for ip in ips:
        name = transport_name(ip)
        bind = "smtp_bind_address6" if ipaddress.ip_address(ip).version == 6 else (
            "smtp_bind_address")
        entries.append(_entry(_row(name, "unix", "-", "-", "smtp"), [
            f"syslog_name=postfix/{name}",
            f"{bind}={ip}",
        ]))
    return entries


_HEADER = """\
# Generated by `mailpolicy postfix-config` from mailpolicy's config.
# Filter mode: {mode}. Outbound IP pool: {pool}."""

_MAIN_INTRO = """\
# ---- main.cf: add these lines (or `postconf -e` each one) ----
# smtpd_recipient_restrictions asks mailpolicy's policy service about every recipient:
# unknown mailboxes get a 550 at RCPT time (no bounce, no backscatter), full mailboxes 552."""

_MASTER_INTRO = """\
# ---- master.cf: append these entries ----
# chroot is off ("n") for every entry: the services talk to mailpolicy over loopback TCP."""

_MASTER_COMMENTS = {
    "reinject": "# reinjection smtpd: the filter hands every message back here "
                "(no content_filter here, or mail loops)",
    FILTER_TRANSPORT: "# transport to mailpolicy's content filter (passes the client's identity "
                      "with XFORWARD)",
    LMTP_TRANSPORT: "# LMTP client to mailpolicy's delivery agent (virtual_transport)",
    "routed": "# routed reinjection smtpd: copies forwarded and autoreplies sent to other "
              "domains leave\n# through the transport of their domain's outbound IP "
              "(content_filter without next hop)",
    "mpout": "# outbound smtp bound to one address of the IP pool "
             "(chosen per sender domain by sender-transport)",
    "submission": "# submission (587, STARTTLS required) for mail clients: SMTP AUTH through "
                  "Dovecot, relay for authenticated users only, their own sender addresses only",
    "submissions": "# submissions (465, implicit TLS, RFC 8314): the same as submission",
}


def _header(cfg: Config, ips: tuple[str, ...]) -> str:
    head = _HEADER.format(mode=cfg.filter.mode, pool=", ".join(ips) or "(none)")
    return "\n".join([head, *(f"# WARNING: {w}" for w in pool_warnings(cfg, ips))])


def render_main(cfg: Config, outbound_ips: Iterable[str]) -> str:
    """The commented main.cf block (config/postfix/main.cf.fragment)."""
    ips = tuple(outbound_ips)
    lines = [_header(cfg, ips), "", _MAIN_INTRO]
    for key, value in main_cf(cfg, ips).items():
        comment = _MAIN_COMMENTS.get(key)
        if comment:
            lines.append(f"# {comment}")
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def render_master(cfg: Config, outbound_ips: Iterable[str]) -> str:
    """The commented master.cf block (config/postfix/master.cf.fragment)."""
    ips = tuple(outbound_ips)
    lines = [_header(cfg, ips), "", _MASTER_INTRO]
    for entry in master_cf(cfg, ips):
        service = entry.split(None, 1)[0]
        kind = ("mpout" if service.startswith("mpout-") else
                "routed" if "content_filter=mpout-" in entry else
                "submissions" if "syslog_name=postfix/submissions\n" in entry else
                "submission" if "syslog_name=postfix/submission\n" in entry else
                service if service in _MASTER_COMMENTS else "reinject")
        lines += [_MASTER_COMMENTS[kind], entry]
    return "\n".join(lines) + "\n"


def render(cfg: Config, outbound_ips: Iterable[str], as_json: bool) -> str:
    """Commented main.cf + master.cf text, or JSON {"main_cf": {...}, "master_cf": [...]}."""
    ips = tuple(outbound_ips)
    if as_json:
        return json.dumps({"main_cf": main_cf(cfg, ips), "master_cf": master_cf(cfg, ips),
                           "warnings": pool_warnings(cfg, ips)}, indent=2) + "\n"
    return render_main(cfg, ips) + "\n" + render_master(cfg, ips)
