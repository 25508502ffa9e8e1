"""Store part for a cluster: the node registry, mailbox placement and the usage figures the
home nodes keep current for the other nodes' RCPT-time quota checks."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mailpolicy.config import NODE_NAME, ConfigError, split_hostport
from mailpolicy.core.cluster import choose_home
from mailpolicy.core.model import Node, NodeState
from mailpolicy.store.db import Db
from mailpolicy.store.errors import Conflict, Invalid, NotFound
from mailpolicy.store.schema import mailboxes, nodes

_HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")


def node_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not NODE_NAME.match(value):
        raise Invalid(field, "a node name is a-z, 0-9 and '-', at most 63 characters")
    return value


def host_port(value: object, field: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); Invalid naming `field` otherwise."""
    if not isinstance(value, str):
        raise Invalid(field, "must be host:port")
    try:
        host, port = split_hostport(value, field)
    except ConfigError:
        raise Invalid(field, f"not host:port: {value!r}") from None
    if not _HOST.match(host):
        raise Invalid(field, f"not a host name or address: {host!r}")
    return host, port


def node_from(m: Any) -> Node:
    return Node(name=m["name"], lmtp=m["lmtp"], imap_host=m["imap_host"],
                imap_port=m["imap_port"], pop3_port=m["pop3_port"],
                state=NodeState(m["state"]), last_seen=m["last_seen"])


def _values(lmtp: object | None, imap: object | None, pop3_port: object | None,
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if lmtp is not None:
        host, port = host_port(lmtp, "lmtp")
        out["lmtp"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if imap is not None:
        if imap == "":
            out["imap_host"], out["imap_port"] = "", 143
        else:
            out["imap_host"], out["imap_port"] = host_port(imap, "imap")
    if pop3_port is not None:
        if not isinstance(pop3_port, int) or isinstance(pop3_port, bool) or not (
                0 < pop3_port < 65536):
            raise Invalid("pop3_port", "must be a port number")
        out["pop3_port"] = pop3_port
    return out


class Nodes:
    """The node registry. Node changes are directory writes (they change where mail goes);
    heartbeats and usage figures are not (they would empty every cache of every node)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    async def list(self) -> list[Node]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(nodes).order_by(nodes.c.name))).all()
        return [node_from(r._mapping) for r in rows]

    async def get(self, name: str) -> Node | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(nodes).where(nodes.c.name == name))).first()
        return node_from(row._mapping) if row else None

    async def totals(self) -> dict[str, tuple[int, int]]:
        """Per home node: (mailboxes, bytes used)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(mailboxes.c.home_node, sa.func.count(),
                          sa.func.coalesce(sa.func.sum(mailboxes.c.used_bytes), 0))
                .group_by(mailboxes.c.home_node))
            return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    async def add(self, name: str, *, lmtp: str, imap: str = "", pop3_port: int = 110,
                  actor: str = "admin") -> Node:
        name = node_name(name)
        values = _values(lmtp, imap, pop3_port)
        async with self.db.write() as conn:
            if await conn.scalar(sa.select(nodes.c.name).where(nodes.c.name == name)):
                raise Conflict(f"node {name} exists", "name")
            await conn.execute(nodes.insert().values(name=name, state=NodeState.ACTIVE.value,
                                                     created_at=time.time(), **values))
            await self.db.audit(conn, actor, "node.add", name, values)
        node = await self.get(name)
        assert node is not None
        return node

    async def edit(self, name: str, *, lmtp: str | None = None, imap: str | None = None,
                   pop3_port: int | None = None, state: str | None = None,
                   actor: str = "admin") -> Node:
        """Change a node's addresses or state (active, draining, down)."""
        name = node_name(name)
        values = _values(lmtp, imap, pop3_port)
        if state is not None:
            try:
                values["state"] = NodeState(state).value
            except ValueError:
                raise Invalid("state", "must be active, draining or down") from None
        async with self.db.write() as conn:
            if await conn.scalar(sa.select(nodes.c.name).where(nodes.c.name == name)) is None:
                raise NotFound(f"no node {name}", "name")
            if values:
                await conn.execute(nodes.update().where(nodes.c.name == name).values(**values))
            await self.db.audit(conn, actor, "node.edit", name, values)
        node = await self.get(name)
        assert node is not None
        return node

    async def remove(self, name: str, *, actor: str = "admin") -> None:
        """Remove a node that is home to no mailbox."""
        name = node_name(name)
        async with self.db.write() as conn:
            homed = await conn.scalar(sa.select(sa.func.count()).select_from(mailboxes).where(
                mailboxes.c.home_node == name))
            if homed:
                raise Conflict(f"node {name} is still home to {homed} mailbox(es); move them "
                               "first (mailpolicy mailbox move ADDRESS --to NODE)", "name")
            res = await conn.execute(nodes.delete().where(nodes.c.name == name))
            if res.rowcount == 0:
                raise NotFound(f"no node {name}", "name")
            await self.db.audit(conn, actor, "node.remove", name)

    async def register(self, name: str, *, lmtp: str, imap: str = "",
                       pop3_port: int = 110) -> None:
        """A daemon announces its node: created (active) when new, its addresses updated when
        they changed, and marked as seen. An empty `imap` keeps what an admin set. The first
        node to register adopts the mailboxes that have no home yet (a single host turned
        into the first node of a cluster: their Maildirs are there)."""
        name = node_name(name, "cluster.node")
        values = _values(lmtp, imap or None, pop3_port)
        current = await self.get(name)
        if current is None:
            try:
                async with self.db.write() as conn:
                    first = await conn.scalar(sa.select(sa.func.count()).select_from(nodes)) == 0
                    await conn.execute(nodes.insert().values(
                        name=name, state=NodeState.ACTIVE.value, created_at=time.time(),
                        last_seen=time.time(), **values))
                    adopted = 0
                    if first:  # the host that was the one implicit node holds their Maildirs
                        adopted = (await conn.execute(mailboxes.update().where(
                            mailboxes.c.home_node == "").values(home_node=name))).rowcount
                    await self.db.audit(conn, "daemon", "node.register", name,
                                        {**values, "adopted_mailboxes": adopted})
                return
            except sa.exc.IntegrityError:
                pass  # registered by another process of this node meanwhile
        elif any(getattr(current, k) != val for k, val in values.items()):
            await self.edit(name, lmtp=lmtp, imap=imap or None, pop3_port=pop3_port,
                            actor="daemon")
        await self.heartbeat(name)

    async def heartbeat(self, name: str) -> None:
        async with self.db.write(directory=False) as conn:
            await conn.execute(nodes.update().where(nodes.c.name == name)
                               .values(last_seen=time.time()))

    async def home_for(self, conn: AsyncConnection, requested: str | None) -> str:
        """The home node of a new mailbox: `requested` (it must exist and not be down), else
        the active node with the fewest bytes stored; "" when no node is registered (the one
        implicit node)."""
        rows = (await conn.execute(sa.select(nodes))).all()
        known = [node_from(r._mapping) for r in rows]
        if requested is not None:
            name = node_name(requested, "node")
            node = next((n for n in known if n.name == name), None)
            if node is None:
                raise Invalid("node", f"no node {name}")
            if node.state is NodeState.DOWN:
                raise Invalid("node", f"node {name} is down")
            return name
        if not known:
            return ""
        used = {r[0]: int(r[1]) for r in await conn.execute(
            sa.select(mailboxes.c.home_node, sa.func.sum(mailboxes.c.used_bytes))
            .group_by(mailboxes.c.home_node))}
        home = choose_home(known, used)
        if home is None:
            raise Invalid("node", "no active node to place the mailbox on")
        return home

    async def set_usage(self, mailbox_id: int, used: int) -> None:
        """The home node's figure of the bytes a mailbox stores (not a directory write)."""
        async with self.db.write(directory=False) as conn:
            await conn.execute(mailboxes.update().where(mailboxes.c.id == mailbox_id)
                               .where(mailboxes.c.used_bytes != used).values(used_bytes=used))

    async def usage(self, mailbox_id: int) -> int:
        """The bytes the home node last reported for a mailbox (0 when it never did)."""
        async with self.db.read() as conn:
            used = await conn.scalar(sa.select(mailboxes.c.used_bytes).where(
                mailboxes.c.id == mailbox_id))
        return int(used or 0)

    async def usages(self, mailbox_ids: Iterable[int]) -> dict[int, int]:
        """usage() of several mailboxes at once."""
        ids = list(mailbox_ids)
        out: dict[int, int] = {}
        async with self.db.read() as conn:
            for chunk in range(0, len(ids), 500):
                for r in await conn.execute(sa.select(mailboxes.c.id, mailboxes.c.used_bytes)
                                            .where(mailboxes.c.id.in_(ids[chunk:chunk + 500]))):
                    out[r[0]] = int(r[1])
        return out

    # ---------------------------------------------------------------- mailbox move
    async def begin_move(self, mailbox_id: int, target: str, address: str, *,
                         actor: str = "admin") -> None:
        """Mark a mailbox as moving to `target`: every node's LMTP defers its mail (4xx) until
        finish_move or abort_move (a directory write: every node hears of it within 1 s)."""
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(mailboxes.c.moving_to, mailboxes.c.name)
                                      .where(mailboxes.c.id == mailbox_id))).first()
            if row is None:
                raise NotFound("no such mailbox", "address")
            if row.moving_to:
                raise Conflict(f"the mailbox is already moving to {row.moving_to}", "address")
            await conn.execute(mailboxes.update().where(mailboxes.c.id == mailbox_id)
                               .values(moving_to=target))
            await self.db.audit(conn, actor, "mailbox.move_begin", address, {"to": target})

    async def finish_move(self, mailbox_id: int, target: str, address: str, *,
                          actor: str = "admin") -> None:
        """The switch: the mailbox is at home on `target` from now on."""
        async with self.db.write() as conn:
            await conn.execute(mailboxes.update().where(mailboxes.c.id == mailbox_id)
                               .values(home_node=target, moving_to=""))
            await self.db.audit(conn, actor, "mailbox.move", address, {"to": target})

    async def abort_move(self, mailbox_id: int, address: str, *, actor: str = "admin") -> None:
        async with self.db.write() as conn:
            await conn.execute(mailboxes.update().where(mailboxes.c.id == mailbox_id)
                               .values(moving_to=""))
            await self.db.audit(conn, actor, "mailbox.move_abort", address)
