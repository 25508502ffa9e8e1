"""`mailpolicy node add|list|show|edit|drain|remove`: the node registry of a cluster."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from mailpolicy.cli.client import Client
from mailpolicy.cli.output import human_size, print_json, print_pairs, print_table, quote_path


def add_parser(sub: Any, json_option: Any) -> None:
    node = sub.add_parser("node", help="nodes of a cluster (many hosts on one PostgreSQL)")
    acts = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name in ("add", "edit"):
        s = acts.add_parser(name, help=f"{name} a node")
        s.add_argument("name", metavar="NAME")
        s.add_argument("--lmtp", metavar="HOST:PORT", required=name == "add",
                       help="where the other nodes' Postfix delivers its mailboxes' mail")
        s.add_argument("--imap", metavar="HOST:PORT",
                       help="its Dovecot IMAP, where the other nodes' Dovecot proxies to")
        s.add_argument("--pop3-port", type=int, metavar="PORT", help="its Dovecot POP3 port")
        if name == "edit":
            s.add_argument("--state", choices=["active", "draining", "down"])
        json_option(s)
    json_option(acts.add_parser("list", help="list nodes: state, seen, mailboxes, bytes"))
    for name, text in (("show", "show a node"), ("drain", "place no new mailboxes on a node"),
                       ("remove", "remove a node that is home to no mailbox")):
        s = acts.add_parser(name, help=text)
        s.add_argument("name", metavar="NAME")
        json_option(s)


def _seen(n: dict[str, Any]) -> str:
    if n["last_seen"] is None:
        return "never"
    when = dt.datetime.fromtimestamp(n["last_seen"], dt.UTC).isoformat(timespec="seconds")
    return when if n["reachable"] else f"UNREACHABLE (last {when})"


def _show(n: dict[str, Any]) -> None:
    print_pairs([("Name", n["name"]), ("State", n["state"]), ("LMTP", n["lmtp"]),
                 ("IMAP", n["imap"]), ("POP3 port", str(n["pop3_port"])), ("Seen", _seen(n)),
                 ("Mailboxes", str(n["mailboxes"])), ("Used", human_size(n["used"]))])


def cmd_node(args: argparse.Namespace, api: Client) -> None:
    a = args.action
    if a == "list":
        res = api.call("GET", "/v1/nodes")
        if args.json:
            return print_json(res)
        print_table(["Name", "State", "Seen", "LMTP", "IMAP", "Mailboxes", "Used"],
                    [[n["name"], n["state"], "yes" if n["reachable"] else "UNREACHABLE",
                      n["lmtp"], n["imap"] or "-", str(n["mailboxes"]), human_size(n["used"])]
                     for n in res["nodes"]])
        return None
    if a in ("add", "edit"):
        body: dict[str, Any] = {k: v for k, v in (("lmtp", args.lmtp), ("imap", args.imap),
                                                  ("pop3_port", args.pop3_port)) if v is not None}
        if a == "add":
            n = api.call("POST", "/v1/nodes", {"name": args.name, **body})
        else:
            if args.state is not None:
                body["state"] = args.state
            n = api.call("PATCH", f"/v1/nodes/{quote_path(args.name)}", body)
    elif a == "show":
        n = api.call("GET", f"/v1/nodes/{quote_path(args.name)}")
    elif a == "drain":
        n = api.call("POST", f"/v1/nodes/{quote_path(args.name)}/drain")
    else:
        res = api.call("DELETE", f"/v1/nodes/{quote_path(args.name)}")
        return print_json(res) if args.json else print(f"removed {res['removed']}")
    return print_json(n) if args.json else _show(n)
