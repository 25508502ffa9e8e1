"""postfixconf: the fragments follow SMTPD_POLICY_README, FILTER_README and our listeners."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailpolicy import config
from mailpolicy.core.outbound import transport_name
from mailpolicy.deploy import postfix as postfixconf

POOL = ("192.0.2.10", "192.0.2.11")


def cfg_of(**sections: Any) -> config.Config:
    return config.from_dict(sections)


def options(entry: str) -> dict[str, str]:
    """The -o name=value options of one master.cf entry."""
    out = {}
    for line in entry.splitlines()[1:]:
        assert line.startswith("  -o "), line
        name, _, value = line[len("  -o "):].partition("=")
        out[name] = value
    return out


def entry_named(entries: list[str], service: str) -> str:
    found = [e for e in entries if e.split(None, 1)[0] == service]
    assert len(found) == 1, f"{service} in {[e.split()[0] for e in entries]}"
    return found[0]


def test_policy_service_comes_before_permit_mynetworks_with_short_timeout_and_4xx_default() -> None:
    cfg = cfg_of(listen={"policy": "127.0.0.1:12345"})
    main = postfixconf.main_cf(cfg, POOL)
    rules = [r.strip() for r in main["smtpd_recipient_restrictions"].split(",")]
    assert rules[0] == "check_policy_service inet:127.0.0.1:12345"
    assert rules.index("permit_mynetworks") > 0
    assert rules[-1] == "reject_unauth_destination"
    assert "reject_unauth_destination" in main["smtpd_relay_restrictions"]
    timeout = int(main["smtpd_policy_service_timeout"].rstrip("s"))
    assert cfg.policy.deadline_seconds < timeout < 100  # Postfix's default is 100s
    assert main["smtpd_policy_service_default_action"].startswith("451 4.")


def test_policy_timeout_grows_with_the_configured_deadline() -> None:
    main = postfixconf.main_cf(cfg_of(policy={"deadline_seconds": 9.5}), POOL)
    assert int(main["smtpd_policy_service_timeout"].rstrip("s")) > 9.5


def test_socketmap_tables_and_lmtp_transport_use_the_listeners() -> None:
    cfg = cfg_of(listen={"socketmap": "127.0.0.1:2001", "lmtp": "127.0.0.1:2002"})
    main = postfixconf.main_cf(cfg, POOL)
    assert main["virtual_mailbox_domains"] == "socketmap:inet:127.0.0.1:2001:domains"
    assert main["virtual_mailbox_maps"] == "socketmap:inet:127.0.0.1:2001:mailboxes"
    assert main["sender_dependent_default_transport_maps"] == (
        "socketmap:inet:127.0.0.1:2001:sender-transport")
    assert main["virtual_transport"] == "mailpolicy-lmtp:inet:127.0.0.1:2002"
    lmtp = entry_named(postfixconf.master_cf(cfg, POOL), "mailpolicy-lmtp")
    assert lmtp.splitlines()[0].split()[-2:] == ["lmtp", "flags=X"]  # final delivery


def test_lmtp_unix_socket_is_the_transport_when_set() -> None:
    """The deployed wiring (README): LMTP only on a Unix socket Postfix alone can reach."""
    sock = "/var/spool/postfix/mailpolicy/lmtp"
    cfg = cfg_of(listen={"lmtp": "", "lmtp_socket": sock})
    assert postfixconf.main_cf(cfg, POOL)["virtual_transport"] == f"mailpolicy-lmtp:unix:{sock}"
    with pytest.raises(config.ConfigError, match=r"listen\.lmtp"):
        cfg_of(listen={"lmtp": ""})  # no LMTP listener at all


def test_ipv6_listener_is_bracketed() -> None:
    main = postfixconf.main_cf(cfg_of(listen={"socketmap": "[::1]:2001"}), POOL)
    assert main["virtual_mailbox_domains"] == "socketmap:inet:[::1]:2001:domains"


def test_after_queue_mode_content_filter_names_the_filter_transport() -> None:
    cfg = cfg_of(listen={"filter": "127.0.0.1:3025"})
    main = postfixconf.main_cf(cfg, POOL)
    master = postfixconf.master_cf(cfg, POOL)
    assert main["content_filter"] == "mailpolicy-filter:[127.0.0.1]:3025"
    assert main["receive_override_options"] == "no_address_mappings"
    assert "smtpd_proxy_filter" not in main
    transport = entry_named(master, "mailpolicy-filter")
    assert transport.split()[1] == "unix" and transport.splitlines()[0].split()[-1] == "smtp"
    opts = options(transport)
    assert opts["smtp_send_xforward_command"] == "yes"
    assert opts["disable_dns_lookups"] == "yes"
    done = int(opts["smtp_data_done_timeout"].rstrip("s"))
    assert done > cfg.reinject.timeout_seconds  # the filter always answers before Postfix gives up
    maxproc = transport.splitlines()[0].split()[6]
    assert main["mailpolicy-filter_destination_concurrency_limit"] == maxproc


def test_before_queue_mode_uses_smtpd_proxy_filter_and_no_content_filter() -> None:
    cfg = cfg_of(filter={"mode": "before-queue"}, listen={"filter": "127.0.0.1:3025"})
    main = postfixconf.main_cf(cfg, POOL)
    master = postfixconf.master_cf(cfg, POOL)
    assert main["smtpd_proxy_filter"] == "127.0.0.1:3025"
    assert "content_filter" not in main and "receive_override_options" not in main
    assert not any(e.startswith("mailpolicy-filter ") for e in master)
    assert not any(k.startswith("mailpolicy-filter_") for k in main)


@pytest.mark.parametrize("mode", ["after-queue", "before-queue"])
def test_reinjection_smtpd_has_every_filter_readme_override(mode: str) -> None:
    cfg = cfg_of(reinject={"host": "127.0.0.1", "port": 11026}, filter={"mode": mode})
    entry = entry_named(postfixconf.master_cf(cfg, POOL), "127.0.0.1:11026")
    head = entry.splitlines()[0].split()
    assert head[1:5] == ["inet", "n", "-", "n"] and head[-1] == "smtpd"
    opts = options(entry)
    assert opts["content_filter"] == ""  # "or else mail will loop"
    assert opts["smtpd_proxy_filter"] == ""
    assert opts["receive_override_options"] == (
        "no_unknown_recipient_checks,no_header_body_checks,no_milters")
    for empty in ("smtpd_helo_restrictions", "smtpd_client_restrictions",
                  "smtpd_sender_restrictions", "smtpd_relay_restrictions",
                  "smtpd_data_restrictions", "smtpd_end_of_data_restrictions", "smtpd_milters"):
        assert opts[empty] == "", empty
    assert opts["smtpd_recipient_restrictions"] == "permit_mynetworks,reject"
    assert opts["mynetworks"] == "127.0.0.0/8"
    assert opts["smtpd_authorized_xforward_hosts"] == "127.0.0.0/8"
    assert opts["smtpd_delay_reject"] == "no"
    assert opts["smtpd_client_connection_count_limit"] == "0"


def test_no_spaces_around_equals_or_commas_in_master_options() -> None:
    for entry in postfixconf.master_cf(cfg_of(), POOL):
        for line in entry.splitlines()[1:]:
            assert " =" not in line and "= " not in line and ", " not in line, line


def test_one_outbound_transport_per_pool_address() -> None:
    pool = ("192.0.2.10", "192.0.2.11", "2001:db8::25")
    master = postfixconf.master_cf(cfg_of(), pool)
    for ip in pool:
        entry = entry_named(master, transport_name(ip))
        assert entry.splitlines()[0].split()[-1] == "smtp"
        key = "smtp_bind_address6" if ":" in ip else "smtp_bind_address"
        assert options(entry)[key] == ip
    assert len([e for e in master if e.startswith("mpout-")]) == len(pool)


def test_message_size_limit_is_ours_and_mailbox_limits_are_not_smaller() -> None:
    main = postfixconf.main_cf(cfg_of(limits={"message_size_limit": "100M"}), POOL)
    assert main["message_size_limit"] == str(100 * 1024**2)
    assert int(main["mailbox_size_limit"]) >= 100 * 1024**2
    assert int(main["virtual_mailbox_limit"]) >= 100 * 1024**2


def test_json_render_is_main_cf_and_master_cf() -> None:
    cfg = cfg_of()
    data = json.loads(postfixconf.render(cfg, POOL, as_json=True))
    assert data == {"main_cf": postfixconf.main_cf(cfg, POOL),
                    "master_cf": postfixconf.master_cf(cfg, POOL), "warnings": []}


def test_text_render_holds_every_line_and_only_comments_besides() -> None:
    cfg = cfg_of()
    text = postfixconf.render(cfg, POOL, as_json=False)
    for key, value in postfixconf.main_cf(cfg, POOL).items():
        assert f"\n{key} = {value}\n" in text
    for entry in postfixconf.master_cf(cfg, POOL):
        assert f"\n{entry}\n" in text
    known = {f"{k} = {v}" for k, v in postfixconf.main_cf(cfg, POOL).items()}
    known |= {ln for e in postfixconf.master_cf(cfg, POOL) for ln in e.splitlines()}
    for line in text.splitlines():
        assert not line or line.startswith("#") or line in known, line


def test_render_is_pure_and_deterministic() -> None:
    cfg = cfg_of()
    assert postfixconf.render(cfg, POOL, False) == postfixconf.render(cfg, list(POOL), False)


def test_submission_services_authenticate_through_dovecot_and_sign() -> None:
    cfg = cfg_of(submission={"submission": "127.0.0.1:1587", "submissions": "submissions"},
                 listen={"filter_originating": "127.0.0.1:3027", "socketmap": "127.0.0.1:3041",
                         "policy": "127.0.0.1:3040"}, filter={"mode": "before-queue"})
    main = postfixconf.main_cf(cfg, POOL)
    master = postfixconf.master_cf(cfg, POOL)
    sub = options(entry_named(master, "127.0.0.1:1587"))
    subs = options(entry_named(master, "submissions"))
    assert sub["smtpd_tls_security_level"] == "encrypt" and "smtpd_tls_wrappermode" not in sub
    assert subs["smtpd_tls_wrappermode"] == "yes"
    for opts in (sub, subs):
        assert opts["smtpd_sasl_type"] == "dovecot" and opts["smtpd_sasl_path"] == "private/auth"
        assert opts["smtpd_sasl_auth_enable"] == "yes" and opts["smtpd_tls_auth_only"] == "yes"
        assert opts["smtpd_sender_restrictions"] == "reject_sender_login_mismatch"
        assert opts["smtpd_relay_restrictions"] == "permit_sasl_authenticated,reject"
        # submitted mail: the originating filter, before the queue (its 553 reaches the user)
        assert opts["smtpd_proxy_filter"] == "127.0.0.1:3027"
        assert opts["content_filter"] == ""
        assert opts["smtpd_policy_service_policy_context"] == "submission"
        for key in ("smtpd_sender_login_maps", "smtpd_recipient_restrictions",
                    "smtpd_data_restrictions"):
            assert main[opts[key].removeprefix("$")], key  # the main.cf parameter exists
    assert main["mailpolicy_submission_sender_login_maps"] == (
        "socketmap:inet:127.0.0.1:3041:senders")
    assert main["mailpolicy_submission_recipient_restrictions"] == (
        "check_policy_service inet:127.0.0.1:3040, permit_sasl_authenticated, reject")
    off = cfg_of(submission={"enabled": False})
    assert not any("smtpd_sasl_type" in e for e in postfixconf.master_cf(off, POOL))
    assert not any(k.startswith("mailpolicy_submission") for k in postfixconf.main_cf(off, POOL))
