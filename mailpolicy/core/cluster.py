"""Pure rules of a cluster: which node is home, where a node is reached, where mail goes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from mailpolicy.config import Config, split_hostport
from mailpolicy.core.model import Mailbox, Node, NodeState
from mailpolicy.core.replies import Reply

LMTP_TRANSPORT = "mailpolicy-lmtp"  # the master.cf transport postfix-config defines
UNREACHABLE_AFTER = 3  # heartbeats missed before `node list` calls a node unreachable


def is_remote(mailbox: Mailbox, node: str) -> bool:
    """Whether `mailbox` lives on another node than `node` ("" on either side: the one
    implicit node, so every mailbox is local)."""
    return bool(node) and bool(mailbox.home_node) and mailbox.home_node != node


def lmtp_nexthop(node: Node) -> str:
    """The transport(5) answer that hands a message to `node`'s LMTP server."""
    host, port = split_hostport(node.lmtp, f"node {node.name} lmtp")
    return f"{LMTP_TRANSPORT}:inet:{f'[{host}]' if ':' in host else host}:{port}"


def advertised(cfg: Config) -> tuple[str, str]:
    """(LMTP host:port, IMAP host:port) this node tells the others (the IMAP one may be "")."""
    return cfg.cluster.lmtp or cfg.listen.lmtp, cfg.cluster.imap


def choose_home(nodes: Iterable[Node], used: Mapping[str, int]) -> str | None:
    """The active node with the fewest bytes stored (by name on a tie); None: no active one."""
    active = [n.name for n in nodes if n.state is NodeState.ACTIVE]
    if not active:
        return None
    return min(active, key=lambda name: (used.get(name, 0), name))


def reachable(node: Node, heartbeat_seconds: float, now: float | None = None) -> bool:
    """Whether the node's daemon was seen within UNREACHABLE_AFTER heartbeats."""
    if node.last_seen is None:
        return False
    now = time.time() if now is None else now
    return now - node.last_seen <= heartbeat_seconds * UNREACHABLE_AFTER


def not_home(mailbox: Mailbox) -> Reply:
    """LMTP's answer for a mailbox at home on another node: deferred (Postfix retries, and
    its transport map then names the home node), never stored in the wrong place."""
    return Reply(451, "4.3.0", f"mailbox lives on node {mailbox.home_node}, not here")


def moving(mailbox: Mailbox) -> Reply:
    """LMTP's answer while `mailbox move` switches the mailbox's home: deferred, Postfix
    retries and then reaches the new home."""
    return Reply(451, "4.2.0", f"mailbox is moving to node {mailbox.moving_to}, try again later")
