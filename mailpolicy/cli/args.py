"""The CLI's argument parser: every verb and option of `mailpolicy`."""

from __future__ import annotations

import argparse

from mailpolicy.cli.client import Refused

DESCRIPTION = ("mailpolicy: the policy service, lookup tables, content filter and LMTP delivery "
               "beside Postfix (`serve`), and the admin verbs for domains and mailboxes.")


def default_socket(config_path: str | None) -> str:
    from mailpolicy import config

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
    p.add_argument("--postmaster", metavar="ADDR",
                   help="where postmaster@ and abuse@ go (default: the first mailbox)")
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
    p.add_argument("--may-send-as", action="append", default=[], metavar="ADDR",
                   help="also send as ADDR (user@domain) or any address of @domain (repeat)")
    p.add_argument("--messages-per-hour", metavar="N|default",
                   help="send limit of this mailbox (0 = none, default = the config's)")
    p.add_argument("--recipients-per-hour", metavar="N|default")
    p.set_defaults(clear_aliases=False, clear_copies=False, clear_may_send_as=False)
    if edit:
        p.add_argument("--clear-may-send-as", action="store_true")
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
    s = sub.add_parser("dovecot-config", help="print the Dovecot conf.d fragment and SQL files "
                       "for the configured store (SQLite, or PostgreSQL with cluster proxying)")
    _config_option(s)
    s.add_argument("--sql-conf-dir", metavar="DIR", default="/etc/dovecot",
                   help="where the SQL .conf.ext files are installed (default /etc/dovecot)")
    s.add_argument("--user", metavar="USER", default="mailpolicy",
                   help="owner of the Maildirs and the store (default mailpolicy)")
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
    for name, text in (("dkim", "show the domain's DKIM selectors"),
                       ("dkim-rotate", "new DKIM selectors: published now, signing after "
                                       "dkim.rotation_delay_hours; the old ones then retire")):
        s = dom.add_parser(name, help=text)
        s.add_argument("name", metavar="NAME")
        _json(s)
    s = dom.add_parser("delete", help="delete a mail domain with its mailboxes")
    s.add_argument("name", metavar="NAME")
    s.add_argument("--yes", action="store_true", help="do not ask")
    s.add_argument("--force", action="store_true",
                   help="also clear redirects and copies of other domains' mailboxes into it "
                        "(else the delete is refused)")

    mb = sub.add_parser("mailbox", help="mailboxes").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    for name in ("add", "edit"):
        s = mb.add_parser(name, help=f"{name} a mailbox")
        s.add_argument("address", metavar="ADDRESS")
        if name == "add":
            s.add_argument("--node", metavar="NODE", help="home node (cluster; default: the "
                           "active node with the fewest bytes stored)")
        _mailbox_options(s, edit=name == "edit")
    s = mb.add_parser("list", help="list mailboxes: name, properties, size used/max")
    s.add_argument("--domain", metavar="D")
    _json(s)
    for name in ("show", "settings"):
        s = mb.add_parser(name, help="show a mailbox" if name == "show"
                          else "mail client settings for a mailbox")
        s.add_argument("address", metavar="ADDRESS")
        _json(s)
    s = mb.add_parser("login-as", help="enter a mailbox as its user: IMAP login and a short-lived "
                      "token to type as the password")
    s.add_argument("address", metavar="ADDRESS")
    s.add_argument("--ttl", type=int, metavar="SECONDS",
                   help="how long the token is valid (default 300, at most 3600)")
    _json(s)
    s = mb.add_parser("move", help="move a mailbox to another node (run on its home node)")
    s.add_argument("address", metavar="ADDRESS")
    s.add_argument("--to", required=True, metavar="NODE")
    _json(s)
    for name, text in (("delete", "delete mailboxes and their mail"),
                       ("clear", "delete all mail of mailboxes, keep the mailboxes")):
        s = mb.add_parser(name, help=text)
        s.add_argument("address", metavar="ADDRESS", nargs="+")
        s.add_argument("--yes", action="store_true", help="do not ask")
        if name == "delete":
            s.add_argument("--force", action="store_true",
                           help="also clear redirects, postmaster settings and copies that "
                                "point at the mailbox (else the delete is refused)")

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

    from mailpolicy.cli import nodes

    nodes.add_parser(sub, _json)

    s = sub.add_parser("dns-records", help="DNS records a mail domain should publish: MX, SPF, "
                       "DKIM, DMARC, SRV")
    s.add_argument("domain", metavar="DOMAIN")
    s.add_argument("--zone", action="store_true", help="in zone-file form")
    _json(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailpolicy", description=DESCRIPTION)
    p.add_argument("-c", "--config", metavar="FILE", default=None,
                   help="config file (default /etc/mailpolicy/mailpolicy.toml if it exists)")
    p.add_argument("--socket", metavar="PATH",
                   help="admin socket (default: the config's, else ./var/admin.sock)")
    add_commands(p)
    return p


