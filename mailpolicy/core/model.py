"""Plain typed values of the directory: domains, mailboxes, autoresponders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum


class DefaultAction(StrEnum):
    """What happens to mail for an address that does not exist in a local domain."""

    REJECT = "reject"  # 550 to the sender at RCPT time
    DISCARD = "discard"  # accepted and deleted silently
    REDIRECT = "redirect"  # to the address in redirect_to
    REDIRECT_DOMAIN = "redirect-domain"  # same local part in the domain in redirect_to


@dataclass(frozen=True, slots=True)
class Domain:
    name: str  # A-label form, lowercase
    owner: str = ""
    outbound_ip: str = ""
    default_action: DefaultAction = DefaultAction.REJECT
    redirect_to: str = ""
    dmarc: bool = False
    dmarc_policy: str = "none"
    dmarc_rua: str = ""
    dmarc_adkim: str = "r"
    dmarc_aspf: str = "r"
    tls_cert: str = ""
    tls_key: str = ""
    postmaster: str = ""  # where postmaster@ and abuse@ go when no such mailbox/alias exists
    id: int = 0


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str
    domain: str
    password_hash: str = ""
    aliases: tuple[str, ...] = ()
    max_size: int | None = None  # bytes; None = unlimited
    copies_to: tuple[str, ...] = ()
    no_save: bool = False
    enabled: bool = True
    id: int = 0
    home_node: str = ""  # the node its Maildir lives on; "" = the one implicit node
    moving_to: str = ""  # set while `mailbox move` switches its home (deliveries wait)

    @property
    def address(self) -> str:
        return f"{self.name}@{self.domain}"

    @property
    def saves_locally(self) -> bool:
        return not self.no_save


class NodeState(StrEnum):
    """A node's state: new mailboxes are placed only on active nodes."""

    ACTIVE = "active"
    DRAINING = "draining"  # keeps its mailboxes, gets no new ones
    DOWN = "down"  # marked down by an admin: gets no new mailboxes


@dataclass(frozen=True, slots=True)
class Node:
    """One host of a cluster: where its LMTP server and its Dovecot are reached."""

    name: str
    lmtp: str  # host:port
    imap_host: str = ""
    imap_port: int = 143
    pop3_port: int = 110
    state: NodeState = NodeState.ACTIVE
    last_seen: float | None = None  # Unix time of the daemon's last heartbeat


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Autoresponder:
    mailbox_id: int
    enabled: bool = False
    from_: str = ""  # "Name <addr>"; "" = the mailbox address
    subject: str = ""  # "" = "Auto: " + original subject
    message: str = ""  # empty = off
    start: dt.date | None = None
    end: dt.date | None = None
    interval_days: int | None = None  # None = the configured default
    attachment: Attachment | None = None

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.message.strip())
