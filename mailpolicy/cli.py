"""The `mailpolicy` command: `serve`, `postfix-config` and the admin verbs (admin socket client)."""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import json
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
TIMEOUT = 120.0


class Refused(Exception):
    """The action was refused (by the API, the user, or the environment); exit code 1."""


# ---------------------------------------------------------------- transport
class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        super().__init__("mailpolicy", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """A thin JSON client of the admin API over its Unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None) -> Any:
        url = path + ("?" + urlencode(query) if query else "")
        conn = _UnixHTTPConnection(self.socket_path)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, url, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise Refused(f"cannot reach the admin socket {self.socket_path}: "
                          f"{e.strerror or e}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            raise Refused(f"unexpected answer from the admin API (HTTP {resp.status})") from None
        if resp.status >= 400:
            msg = payload.get("message", f"HTTP {resp.status}") if isinstance(payload, dict) else (
                f"HTTP {resp.status}")
            field = payload.get("field") if isinstance(payload, dict) else ""
            raise Refused(f"{field}: {msg}" if field else msg)
        return payload


def _q(value: str) -> str:
    return quote(value, safe="@")


# ---------------------------------------------------------------- output
def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _pairs(items: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in items)
    for k, val in items:
        if isinstance(val, bool):
            val = "yes" if val else "no"
        elif isinstance(val, list):
            val = " ".join(val) or "-"
        elif val is None or val == "":
            val = "-"
        print(f"{k + ':':<{width + 1}} {val}")


def human_size(n: int) -> str:
    for unit, mult in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= mult:
            return f"{n / mult:.1f}{unit}"
    return str(n)


def _size(used: int, maximum: int | None) -> str:
    from .config import format_size

    return f"{human_size(used)}/{format_size(maximum)}"


def _properties(p: dict[str, bool]) -> str:
    words = ["enabled" if p.get("enabled") else "disabled"]
    words += [w for k, w in (("forwards", "forwards"), ("no_save", "no-save"),
                             ("autoreply", "autoreply"), ("over_quota", "over-quota")) if p.get(k)]
    return ",".join(words)


# ---------------------------------------------------------------- confirmation
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
                     ("tls_key", "tls_key")):
        val = getattr(args, opt)
        if val is not None:
            body[key] = str(Path(val).absolute()) if key.startswith("tls_") and val else val
    return body


def _show_domain(d: dict[str, Any]) -> None:
    _pairs([("Name", d["name"] + (f" ({d['unicode_name']})" if d["unicode_name"] != d["name"]
                                  else "")),
            ("Owner", d["owner"]), ("Outbound IP", d["outbound_ip"]),
            ("Default action", d["default_action"]), ("Redirect to", d["redirect_to"]),
            ("DMARC", d["dmarc"]), ("DMARC policy", d["dmarc_policy"]),
            ("DMARC rua", d["dmarc_rua"]),
            ("DMARC alignment", f"adkim={d['dmarc_adkim']} aspf={d['dmarc_aspf']}"),
            ("TLS certificate", d["tls_cert"]), ("TLS key", d["tls_key"]),
            ("Mailboxes", d.get("mailboxes", 0))])


def _dns_warning(res: dict[str, Any]) -> None:
    dns = res.get("dns_update")
    if dns and not dns.get("ok"):
        print(f"mailpolicy: warning: saved, but the DMARC DNS update failed: {dns.get('error')}",
              file=sys.stderr)


def cmd_domain(args: argparse.Namespace, api: Client) -> None:
    if args.action == "add":
        d = api.call("POST", "/v1/domains", {"name": args.name, **_domain_body(args)})
        _dns_warning(d)
        _print_json(d) if args.json else _show_domain(d)
    elif args.action == "edit":
        d = api.call("PATCH", f"/v1/domains/{_q(args.name)}", _domain_body(args))
        _dns_warning(d)
        _print_json(d) if args.json else _show_domain(d)
    elif args.action == "list":
        res = api.call("GET", "/v1/domains")
        if args.json:
            return _print_json(res)
        _table(["Name", "Owner", "Outbound IP", "Default action", "DMARC", "Mailboxes"],
               [[d["name"], d["owner"] or "-", d["outbound_ip"] or "-",
                 d["default_action"] + (f" {d['redirect_to']}" if d["redirect_to"] else ""),
                 "on" if d["dmarc"] else "off", str(d.get("mailboxes", 0))]
                for d in res["domains"]])
    elif args.action == "show":
        d = api.call("GET", f"/v1/domains/{_q(args.name)}")
        _print_json(d) if args.json else _show_domain(d)
    elif args.action == "delete":
        d = api.call("GET", f"/v1/domains/{_q(args.name)}")
        _confirm(args, f"Delete domain {d['name']} with its {d.get('mailboxes', 0)} "
                       "mailbox(es) and all their mail?")
        res = api.call("DELETE", f"/v1/domains/{_q(d['name'])}", query={"confirm": "true"})
        _dns_warning(res)
        print(f"deleted {res['deleted']}" + (f" and {len(res['mailboxes'])} mailbox(es)"
                                              if res.get("mailboxes") else ""))


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


def _show_mailbox(m: dict[str, Any]) -> None:
    usage = m.get("usage") or {"used": 0, "max": m["max_size"]}
    _pairs([("Address", m["address"]), ("Aliases", m["aliases"]),
            ("Size", _size(usage["used"], usage["max"])), ("Copies to", m["copies_to"]),
            ("Do not save", m["no_save"]), ("Enabled", m["enabled"]),
            ("Password set", m["has_password"]),
            ("Properties", _properties(m.get("properties") or {"enabled": m["enabled"]}))])


def cmd_mailbox(args: argparse.Namespace, api: Client) -> None:
    a = args.action
    if a in ("add", "edit"):
        if a == "add":
            m = api.call("POST", "/v1/mailboxes",
                         {"address": args.address, **_mailbox_body(args, None)})
        else:
            cur = api.call("GET", f"/v1/mailboxes/{_q(args.address)}")
            m = api.call("PATCH", f"/v1/mailboxes/{_q(cur['address'])}",
                         _mailbox_body(args, cur))
        _print_json(m) if args.json else _show_mailbox(m)
    elif a == "list":
        res = api.call("GET", "/v1/mailboxes", query={"domain": args.domain} if args.domain
                       else None)
        if args.json:
            return _print_json(res)
        _table(["Name", "Properties", "Size"],
               [[m["address"], _properties(m["properties"]),
                 _size(m["usage"]["used"], m["usage"]["max"])] for m in res["mailboxes"]])
    elif a == "show":
        m = api.call("GET", f"/v1/mailboxes/{_q(args.address)}")
        _print_json(m) if args.json else _show_mailbox(m)
    elif a in ("delete", "clear"):
        boxes = [api.call("GET", f"/v1/mailboxes/{_q(x)}")["address"] for x in args.address]
        what = ("Delete" if a == "delete" else "Clear all mail of") + " " + ", ".join(boxes)
        _confirm(args, what + ("" if a == "clear" else " and all their mail") + "?")
        for box in boxes:
            if a == "delete":
                api.call("DELETE", f"/v1/mailboxes/{_q(box)}", query={"confirm": "true"})
                print(f"deleted {box}")
            else:
                res = api.call("POST", f"/v1/mailboxes/{_q(box)}/clear",
                               query={"confirm": "true"})
                print(f"cleared {box} ({human_size(res.get('freed', 0))} freed)")
    elif a == "settings":
        s = api.call("GET", f"/v1/mailboxes/{_q(args.address)}/settings")
        if args.json:
            return _print_json(s)
        _pairs([("Address", s["address"]), ("Login", s["login"]),
                ("Password", "the mailbox password")]
               + [(p.upper(), f"{s[p]['host']} port {s[p]['port']} ({s[p]['security']})")
                  for p in ("imap", "pop3", "smtp")])


# ---------------------------------------------------------------- autoreply, dns
def _read_file(path: str, what: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise Refused(f"cannot read {what} {path}: {e.strerror}") from None


def cmd_autoreply(args: argparse.Namespace, api: Client) -> None:
    url = f"/v1/mailboxes/{_q(args.address)}/autoresponder"
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
        return _print_json(ar)
    att = ar["attachment"]
    active: Any = ar["active"]
    if active and (ar["start"] or ar["end"]):  # enabled with a message; the dates still apply
        active = "yes, " + " ".join(f"{w} {d}" for w, d in (("from", ar["start"]),
                                                             ("until", ar["end"])) if d)
    _pairs([("Address", ar["address"]), ("Enabled", ar["enabled"]),
            ("Active", active), ("From", ar["from"] or f"(the mailbox) {ar['address']}"),
            ("Subject", ar["subject"] or "Auto: <original subject>"),
            ("Start", ar["start"]), ("End", ar["end"]),
            ("Interval days", ar["interval_days"] or "default"),
            ("Attachment", f"{att['filename']} ({att['content_type']}, {att['size']} bytes)"
             if att else None)])
    print("Message:")
    print(ar["message"] or "(empty: the autoresponder is off)")


def cmd_dns_records(args: argparse.Namespace, api: Client) -> None:
    res = api.call("GET", f"/v1/domains/{_q(args.domain)}/dns-records")
    if args.json:
        return _print_json(res)
    sys.stdout.write(res["zone"])


# ---------------------------------------------------------------- local commands
def cmd_serve(args: argparse.Namespace) -> int:
    from .daemon import run

    return run(args.config)


def cmd_postfix_config(args: argparse.Namespace) -> int:
    from . import config, outbound, postfixconf

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        raise Refused(str(e)) from None
    out = postfixconf.render(cfg, outbound.pool(cfg), args.json)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_OK


def default_socket(config_path: str | None) -> str:
    from . import config

    try:
        return str(config.load(config_path).admin_socket)
    except config.ConfigError as e:
        raise Refused(str(e)) from None


# ---------------------------------------------------------------- parser
def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON (stable for scripts)")


def _domain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--owner", metavar="USER")
    p.add_argument("--ip", metavar="ADDR|auto", help="outbound IP from the pool, or auto")
    p.add_argument("--default-action",
                   choices=["reject", "discard", "redirect", "redirect-domain"])
    p.add_argument("--redirect-to", metavar="X", help="address (redirect) or domain")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dmarc", dest="dmarc", action="store_const", const=True)
    g.add_argument("--no-dmarc", dest="dmarc", action="store_const", const=False)
    p.add_argument("--dmarc-policy", choices=["none", "quarantine", "reject"])
    p.add_argument("--dmarc-rua", metavar="ADDR")
    p.add_argument("--dmarc-adkim", choices=["r", "s"])
    p.add_argument("--dmarc-aspf", choices=["r", "s"])
    p.add_argument("--tls-cert", metavar="FILE")
    p.add_argument("--tls-key", metavar="FILE")
    _json(p)


def _mailbox_options(p: argparse.ArgumentParser, edit: bool) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")
    p.add_argument("--alias", action="append", default=[], metavar="NAME",
                   help="another name in the mailbox's domain (repeat, or 'a b')")
    p.add_argument("--max-size", metavar="SIZE", help="e.g. 500M, 2G, unlimited")
    p.add_argument("--copy-to", action="append", default=[], metavar="ADDR",
                   help="send a copy of each message to ADDR or a local name (repeat, or 'a b')")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-save", dest="no_save", action="store_const", const=True)
    g.add_argument("--save", dest="no_save", action="store_const", const=False)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--enable", dest="enabled", action="store_const", const=True)
    g.add_argument("--disable", dest="enabled", action="store_const", const=False)
    p.set_defaults(clear_aliases=False, clear_copies=False)
    if edit:
        p.add_argument("--clear-aliases", action="store_true")
        p.add_argument("--clear-copies", action="store_true")
    _json(p)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS)


def add_commands(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="run the daemon in the foreground")
    _config_option(s)
    s = sub.add_parser("postfix-config", help="print the Postfix main.cf/master.cf fragments")
    _config_option(s)
    _json(s)

    dom = sub.add_parser("domain", help="mail domains").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    for name in ("add", "edit"):
        s = dom.add_parser(name, help=f"{name} a mail domain")
        s.add_argument("name", metavar="NAME")
        _domain_options(s)
    _json(dom.add_parser("list", help="list mail domains"))
    s = dom.add_parser("show", help="show a mail domain")
    s.add_argument("name", metavar="NAME")
    _json(s)
    s = dom.add_parser("delete", help="delete a mail domain with its mailboxes")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--yes", action="store_true", help="do not ask")

    mb = sub.add_parser("mailbox", help="mailboxes").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    for name in ("add", "edit"):
        s = mb.add_parser(name, help=f"{name} a mailbox")
        s.add_argument("address", metavar="ADDRESS")
        _mailbox_options(s, edit=name == "edit")
    s = mb.add_parser("list", help="list mailboxes: name, properties, size used/max")
    s.add_argument("--domain", metavar="D")
    _json(s)
    for name in ("show", "settings"):
        s = mb.add_parser(name, help="show a mailbox" if name == "show"
                          else "mail client settings for a mailbox")
        s.add_argument("address", metavar="ADDRESS")
        _json(s)
    for name, text in (("delete", "delete mailboxes and their mail"),
                       ("clear", "delete all mail of mailboxes, keep the mailboxes")):
        s = mb.add_parser(name, help=text)
        s.add_argument("address", metavar="ADDRESS", nargs="+")
        s.add_argument("--yes", action="store_true", help="do not ask")

    ar = sub.add_parser("autoreply", help="mailbox autoresponder").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    s = ar.add_parser("set", help="set the autoresponder (options not given stay unchanged)")
    s.add_argument("address", metavar="ADDRESS")
    s.add_argument("--from", dest="from_", metavar='"NAME <ADDR>"')
    s.add_argument("--subject", metavar="S")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--message", metavar="TEXT", help="the text; empty turns it off")
    g.add_argument("--message-file", metavar="F", help="read the text from F (- = stdin)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--attach", metavar="FILE")
    g.add_argument("--no-attach", action="store_true", help="remove the attachment")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--enable", dest="enabled", action="store_const", const=True)
    g.add_argument("--disable", dest="enabled", action="store_const", const=False)
    s.add_argument("--start", metavar="DATE", help="YYYY-MM-DD (empty: none)")
    s.add_argument("--end", metavar="DATE", help="YYYY-MM-DD (empty: none)")
    s.add_argument("--interval-days", type=int, metavar="N",
                   help="answer the same sender again after N days")
    _json(s)
    s = ar.add_parser("show", help="show the autoresponder")
    s.add_argument("address", metavar="ADDRESS")
    _json(s)

    s = sub.add_parser("dns-records", help="DNS records a mail domain should publish")
    s.add_argument("domain", metavar="DOMAIN")
    _json(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailpolicy", description=__doc__)
    p.add_argument("-c", "--config", metavar="FILE", default=None,
                   help="config file (default /etc/mailpolicy/mailpolicy.toml if it exists)")
    p.add_argument("--socket", metavar="PATH",
                   help="admin socket (default: the config's, else ./var/admin.sock)")
    add_commands(p)
    return p


HANDLERS = {"domain": cmd_domain, "mailbox": cmd_mailbox, "autoreply": cmd_autoreply,
            "dns-records": cmd_dns_records}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "postfix-config":
            return cmd_postfix_config(args)
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
