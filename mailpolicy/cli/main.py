"""The `mailpolicy` command: `serve`, `postfix-config` and the admin verbs (admin socket client)."""

from __future__ import annotations

import argparse
import base64
import getpass
import sys
from pathlib import Path
from typing import Any

from mailpolicy.cli.args import build_parser, default_socket
from mailpolicy.cli.client import Client, Refused
from mailpolicy.cli.nodes import cmd_node
from mailpolicy.cli.output import (
    human_size,
    print_json,
    print_pairs,
    print_table,
    properties_text,
    quote_path,
    usage_text,
)
from mailpolicy.core.senders import normalize_grant

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
MOVE_TIMEOUT = 3700.0  # seconds: a big mailbox takes a while to copy


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise Refused("refusing without --yes: no terminal to ask for confirmation")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise Refused("not confirmed; nothing was changed")


# ---------------------------------------------------------------- domain
def _domain_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for opt, key in (("owner", "owner"), ("ip", "outbound_ip"),
                     ("default_action", "default_action"), ("redirect_to", "redirect_to"),
                     ("dmarc", "dmarc"), ("dmarc_policy", "dmarc_policy"),
                     ("dmarc_rua", "dmarc_rua"), ("dmarc_adkim", "dmarc_adkim"),
                     ("dmarc_aspf", "dmarc_aspf"), ("tls_cert", "tls_cert"),
                     ("tls_key", "tls_key"), ("postmaster", "postmaster")):
        val = getattr(args, opt)
        if val is not None:
            body[key] = str(Path(val).absolute()) if key.startswith("tls_") and val else val
    return body


def _show_domain(d: dict[str, Any]) -> None:
    print_pairs([("Name", d["name"] + (f" ({d['unicode_name']})" if d["unicode_name"] != d["name"]
                                  else "")),
            ("Owner", d["owner"]), ("Outbound IP", d["outbound_ip"]),
            ("Default action", d["default_action"]), ("Redirect to", d["redirect_to"]),
            ("DMARC", d["dmarc"]), ("DMARC policy", d["dmarc_policy"]),
            ("DMARC rua", d["dmarc_rua"]),
            ("DMARC alignment", f"adkim={d['dmarc_adkim']} aspf={d['dmarc_aspf']}"),
            ("TLS certificate", d["tls_cert"]), ("TLS key", d["tls_key"]),
            ("postmaster@, abuse@", d.get("postmaster") or "nowhere (refused at RCPT)"),
            ("Mailboxes", d.get("mailboxes", 0))])


def _dns_warning(res: dict[str, Any]) -> None:
    dns = res.get("dns_update")
    if dns and not dns.get("ok"):
        print(f"mailpolicy: warning: saved, but the DNS update failed: {dns.get('error')}",
              file=sys.stderr)


def cmd_domain(args: argparse.Namespace, api: Client) -> None:
    if args.action == "add":
        d = api.call("POST", "/v1/domains", {"name": args.name, **_domain_body(args)})
        _dns_warning(d)
        _warnings(d)
        print_json(d) if args.json else _show_domain(d)
    elif args.action == "edit":
        d = api.call("PATCH", f"/v1/domains/{quote_path(args.name)}", _domain_body(args))
        _dns_warning(d)
        print_json(d) if args.json else _show_domain(d)
    elif args.action == "list":
        res = api.call("GET", "/v1/domains")
        if args.json:
            return print_json(res)
        print_table(["Name", "Owner", "Outbound IP", "Default action", "DMARC", "Mailboxes"],
               [[d["name"], d["owner"] or "-", d["outbound_ip"] or "-",
                 d["default_action"] + (f" {d['redirect_to']}" if d["redirect_to"] else ""),
                 "on" if d["dmarc"] else "off", str(d.get("mailboxes", 0))]
                for d in res["domains"]])
    elif args.action == "show":
        d = api.call("GET", f"/v1/domains/{quote_path(args.name)}")
        print_json(d) if args.json else _show_domain(d)
    elif args.action in ("dkim", "dkim-rotate"):
        url = f"/v1/domains/{quote_path(args.name)}/dkim"
        res = (api.call("POST", url + "/rotate") if args.action == "dkim-rotate"
               else api.call("GET", url))
        _dns_warning(res)
        if args.json:
            return print_json(res)
        print_table(["Selector", "Algorithm", "Signs from", "Retired at", "State"],
                    [[k["selector"], k["algorithm"], k["active_from"], k["retire_at"] or "-",
                      "signing" if k["signing"] else "published" if k["published"]
                      else "retired"] for k in res["keys"]])
    elif args.action == "delete":
        d = api.call("GET", f"/v1/domains/{quote_path(args.name)}")
        _confirm(args, f"Delete domain {d['name']} with its {d.get('mailboxes', 0)} "
                       "mailbox(es) and all their mail?")
        query = {"confirm": "true"} | ({"force": "true"} if args.force else {})
        res = api.call("DELETE", f"/v1/domains/{quote_path(d['name'])}", query=query)
        _dns_warning(res)
        print(f"deleted {res['deleted']}" + (f" and {len(res['mailboxes'])} mailbox(es)"
                                              if res.get("mailboxes") else ""))
        for line in res.get("cleared", []):
            print(f"  also changed {line}")


# ---------------------------------------------------------------- mailbox
def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    if args.action == "add" and sys.stdin.isatty():
        pw = getpass.getpass("Password (empty: none): ")
        if pw and getpass.getpass("Confirm: ") != pw:
            raise Refused("the passwords do not match")
        return pw or None
    return None


def _mailbox_body(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    pw = _read_password(args)
    if pw is not None:
        body["password"] = pw
    cur_aliases = [] if current is None or args.clear_aliases else current["aliases"]
    cur_copies = [] if current is None or args.clear_copies else current["copies_to"]
    # like the panel's fields, one option may hold several names separated by spaces/commas
    aliases = [a for v in args.alias for a in v.replace(",", " ").split()]
    copies = [c for v in args.copy_to for c in v.replace(",", " ").split()]
    if args.alias or args.clear_aliases:
        body["aliases"] = cur_aliases + [a for a in dict.fromkeys(aliases)
                                         if a not in cur_aliases]
    if args.copy_to or args.clear_copies:
        body["copies_to"] = cur_copies + [c for c in dict.fromkeys(copies)
                                          if c not in cur_copies]
    if args.max_size is not None:
        body["max_size"] = args.max_size
    if args.no_save is not None:
        body["no_save"] = args.no_save
    if args.enabled is not None:
        body["enabled"] = args.enabled
    return body


_UNSET = object()  # an option not given


def _limit_arg(value: str | None, option: str) -> Any:
    if value is None:
        return _UNSET
    if value == "default":
        return None
    if not value.isdigit():
        raise Refused(f"{option}: a whole number (0 = no limit) or 'default'")
    return int(value)



def _sending_body(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    """The /sending changes asked for by --may-send-as / --messages-per-hour / ... (or {})."""
    body: dict[str, Any] = {}
    grants = [g for v in args.may_send_as for g in v.replace(",", " ").split()]
    for g in grants:
        try:
            normalize_grant(g)
        except ValueError as e:
            raise Refused(f"--may-send-as: {e}") from None
    if grants or args.clear_may_send_as:
        cur = [] if current is None or args.clear_may_send_as else current["may_send_as"]
        body["may_send_as"] = cur + [g for g in dict.fromkeys(grants) if g not in cur]
    for opt, key in (("messages_per_hour", "--messages-per-hour"),
                     ("recipients_per_hour", "--recipients-per-hour")):
        val = _limit_arg(getattr(args, opt), key)
        if val is not _UNSET:
            body[opt] = val
    return body


def _show_mailbox(m: dict[str, Any]) -> None:
    usage = m.get("usage") or {"used": 0, "max": m["max_size"]}
    print_pairs([("Address", m["address"]), ("Aliases", m["aliases"]),
            ("Size", usage_text(usage["used"], usage["max"])), ("Copies to", m["copies_to"]),
            ("Do not save", m["no_save"]), ("Enabled", m["enabled"]),
            ("Password set", m["has_password"]),
            *([("May send as", m["sending"]["may_send_as"]),
               ("Send limits", "{messages_per_hour} messages, {recipients_per_hour} recipients "
                "per hour".format(**m["sending"]["effective"]))] if "sending" in m else []),
            *([("Home node", m["home_node"])] if m.get("home_node") else []),
            ("Properties", properties_text(m.get("properties") or {"enabled": m["enabled"]}))])


def cmd_mailbox(args: argparse.Namespace, api: Client) -> None:
    a = args.action
    if a in ("add", "edit"):
        # the sending options are checked before anything changes (two API calls)
        if a == "add":
            sending = _sending_body(args, None)
            m = api.call("POST", "/v1/mailboxes",
                         {"address": args.address, **_mailbox_body(args, None)}
                         | ({"node": args.node} if args.node else {}))
        else:
            cur = api.call("GET", f"/v1/mailboxes/{quote_path(args.address)}")
            sending = _sending_body(args, api.call(
                "GET", f"/v1/mailboxes/{quote_path(cur['address'])}/sending"))
            m = api.call("PATCH", f"/v1/mailboxes/{quote_path(cur['address'])}",
                         _mailbox_body(args, cur))
        url = f"/v1/mailboxes/{quote_path(m['address'])}/sending"
        m["sending"] = api.call("PATCH" if sending else "GET", url, sending or None)
        print_json(m) if args.json else _show_mailbox(m)
    elif a == "list":
        res = api.call("GET", "/v1/mailboxes", query={"domain": args.domain} if args.domain
                       else None)
        if args.json:
            return print_json(res)
        homes = any(m.get("home_node") for m in res["mailboxes"])  # a cluster: say where
        print_table(["Name", "Properties", "Size"] + (["Node"] if homes else []),
               [[m["address"], properties_text(m["properties"]),
                 usage_text(m["usage"]["used"], m["usage"]["max"])]
                + ([m.get("home_node") or "-"] if homes else []) for m in res["mailboxes"]])
    elif a == "show":
        m = api.call("GET", f"/v1/mailboxes/{quote_path(args.address)}")
        print_json(m) if args.json else _show_mailbox(m)
    elif a in ("delete", "clear"):
        boxes = [api.call("GET", f"/v1/mailboxes/{quote_path(x)}")["address"] for x in args.address]
        what = ("Delete" if a == "delete" else "Clear all mail of") + " " + ", ".join(boxes)
        _confirm(args, what + ("" if a == "clear" else " and all their mail") + "?")
        for box in boxes:
            if a == "delete":
                query = {"confirm": "true"} | ({"force": "true"} if args.force else {})
                res = api.call("DELETE", f"/v1/mailboxes/{quote_path(box)}", query=query)
                print(f"deleted {box}")
                for line in res.get("cleared", []):
                    print(f"  also changed {line}")
            else:
                res = api.call("POST", f"/v1/mailboxes/{quote_path(box)}/clear",
                               query={"confirm": "true"})
                print(f"cleared {box} ({human_size(res.get('freed', 0))} freed)")
    elif a == "move":
        res = api.call("POST", f"/v1/mailboxes/{quote_path(args.address)}/move",
                       {"to": args.to}, timeout=MOVE_TIMEOUT)
        if args.json:
            return print_json(res)
        print(f"moved {res['moved']} from {res['from']} to {res['to']} in {res['seconds']} s "
              f"(deliveries deferred for {res['deferred_seconds']} s)")
        if res.get("sessions_kicked") is False:
            print("warning: the old node's IMAP/POP3 sessions were not ended (doveadm kick "
                  "failed, see the daemon log): they see the old copy until they log in again")
    elif a == "settings":
        s = api.call("GET", f"/v1/mailboxes/{quote_path(args.address)}/settings")
        if args.json:
            return print_json(s)
        print_pairs([("Address", s["address"]), ("Login", s["login"]),
                ("Password", "the mailbox password")]
               + [(p.upper(), f"{s[p]['host']} port {s[p]['port']} ({s[p]['security']})")
                  for p in ("imap", "pop3", "smtp", "smtps") if p in s])
    elif a == "login-as":
        res = api.call("POST", f"/v1/mailboxes/{quote_path(args.address)}/login-token",
                       {} if args.ttl is None else {"ttl": args.ttl})
        if args.json:
            return print_json(res)
        # Dovecot's token passdb accepts it until it expires (it cannot mark an IMAP login used).
        print_pairs([("IMAP login", res["address"]), ("Password", res["token"]),
                     ("Expires", res["expires_at"]),
                     ("Note", "valid for IMAP logins until it expires; every creation is audited")])


# ---------------------------------------------------------------- autoreply, dns
def _read_file(path: str, what: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise Refused(f"cannot read {what} {path}: {e.strerror}") from None


def cmd_autoreply(args: argparse.Namespace, api: Client) -> None:
    url = f"/v1/mailboxes/{quote_path(args.address)}/autoresponder"
    if args.action == "show":
        ar = api.call("GET", url)
    else:
        body: dict[str, Any] = {}
        for opt, key in (("from_", "from"), ("subject", "subject"), ("message", "message"),
                         ("enabled", "enabled"), ("interval_days", "interval_days")):
            if getattr(args, opt) is not None:
                body[key] = getattr(args, opt)
        if args.message_file is not None:
            try:
                body["message"] = _read_file(args.message_file, "message file").decode()
            except UnicodeDecodeError:
                raise Refused("the message file is not UTF-8 text") from None
        for key in ("start", "end"):
            val = getattr(args, key)
            if val is not None:
                body[key] = None if val in ("", "none") else val
        if args.attach is not None:
            data = _read_file(args.attach, "attachment")
            body["attachment"] = {"filename": Path(args.attach).name,
                                  "data": base64.b64encode(data).decode()}
        elif args.no_attach:
            body["attachment"] = None
        ar = api.call("PUT", url, body)
    if args.json:
        return print_json(ar)
    att = ar["attachment"]
    active: Any = ar["active"]
    if active and (ar["start"] or ar["end"]):  # enabled with a message; the dates still apply
        active = "yes, " + " ".join(f"{w} {d}" for w, d in (("from", ar["start"]),
                                                             ("until", ar["end"])) if d)
    print_pairs([("Address", ar["address"]), ("Enabled", ar["enabled"]),
            ("Active", active), ("From", ar["from"] or f"(the mailbox) {ar['address']}"),
            ("Subject", ar["subject"] or "Auto: <original subject>"),
            ("Start", ar["start"]), ("End", ar["end"]),
            ("Interval days", ar["interval_days"] or "default"),
            ("Attachment", f"{att['filename']} ({att['content_type']}, {att['size']} bytes)"
             if att else None)])
    print("Message:")
    print(ar["message"] or "(empty: the autoresponder is off)")


def _warnings(res: dict[str, Any]) -> None:
    for w in res.get("warnings") or ():
        print(f"mailpolicy: warning: {w}", file=sys.stderr)


def cmd_dns_records(args: argparse.Namespace, api: Client) -> None:
    res = api.call("GET", f"/v1/domains/{quote_path(args.domain)}/dns-records")
    if args.json:
        return print_json(res)
    _warnings(res)
    if args.zone:
        sys.stdout.write(res["zone"])
        return
    for r in res["records"]:
        print(f"{r['name']} {r['type']} {r['value']}\n    ({r['purpose']})")


# ---------------------------------------------------------------- local commands
def cmd_serve(args: argparse.Namespace) -> int:
    from mailpolicy.runtime.daemon import run

    return run(args.config)


def cmd_postfix_config(args: argparse.Namespace) -> int:
    from mailpolicy import config
    from mailpolicy.core import outbound
    from mailpolicy.deploy import postfix as postfixconf

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        raise Refused(str(e)) from None
    ips = outbound.pool(cfg)
    for warning in outbound.pool_warnings(cfg, ips):
        print(f"mailpolicy: warning: {warning}", file=sys.stderr)
    out = postfixconf.render(cfg, ips, args.json)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_OK


def cmd_dovecot_config(args: argparse.Namespace) -> int:
    import grp
    import json
    import pwd

    from mailpolicy import config
    from mailpolicy.deploy import dovecot as dovecotconf

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        raise Refused(str(e)) from None
    owner = dovecotconf.DovecotUser(user=args.user, group=args.user)
    try:  # the real group and uid of that user when it exists here
        pw = pwd.getpwnam(args.user)
        owner = dovecotconf.DovecotUser(args.user, grp.getgrgid(pw.pw_gid).gr_name,
                                        min(pw.pw_uid, owner.first_valid_uid))
    except KeyError:
        pass
    sql_path = str(Path(args.sql_conf_dir) / dovecotconf.SQL_CONF_NAME)
    try:
        files = dovecotconf.render(cfg, sql_conf_path=sql_path, owner=owner)
    except ValueError as e:
        raise Refused(str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(files, indent=2) + "\n")
        return EXIT_OK
    where = {dovecotconf.CONF_NAME: f"/etc/dovecot/conf.d/{dovecotconf.CONF_NAME}"}
    for name, text in files.items():
        print(f"# ==== {where.get(name, str(Path(args.sql_conf_dir) / name))} ====")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        print()
    return EXIT_OK


HANDLERS = {"domain": cmd_domain, "mailbox": cmd_mailbox, "autoreply": cmd_autoreply,
            "dns-records": cmd_dns_records, "node": cmd_node}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "postfix-config":
            return cmd_postfix_config(args)
        if args.command == "dovecot-config":
            return cmd_dovecot_config(args)
        api = Client(args.socket or default_socket(args.config))
        HANDLERS[args.command](args, api)
    except Refused as e:
        print(f"mailpolicy: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("mailpolicy: interrupted", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
