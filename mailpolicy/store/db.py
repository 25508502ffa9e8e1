"""Transactions of the store: read/write connections, the directory generation, the audit line,
and the one query that loads mailboxes with their aliases and copies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailpolicy.core.model import Mailbox
from mailpolicy.store.changes import CHANNEL, NOTIFY_SQL
from mailpolicy.store.fastread import mailbox_from
from mailpolicy.store.schema import (
    aliases,
    audit_log,
    copies,
    directory_generation,
    domains,
    mailboxes,
)

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def dialect_insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """An INSERT with the dialect's ON CONFLICT clauses (both SQLite and PostgreSQL have
    them): the atomic upserts that stay exact when several processes or nodes write at once."""
    return _INSERTS[conn.dialect.name](table)


class Db:
    """The engine and its transaction primitives, shared by the Store and its parts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.version = 0  # bumped by every committed directory write (cache invalidation)
        self.notify = engine.dialect.name == "postgresql"  # NOTIFY directory changes

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self, directory: bool = True) -> AsyncIterator[AsyncConnection]:
        """One write transaction; `directory` writes (not claims, tokens, audit) move
        `version` so caches of lookups start afresh."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(write=True)
            async with conn.begin():
                yield conn
                if directory and self.notify:  # PostgreSQL: other processes hear it at once
                    generation = await conn.scalar(sa.text(NOTIFY_SQL))
                    await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, str(generation))))
                elif directory:  # for the caches of other processes (see generation())
                    await conn.execute(directory_generation.update().values(
                        generation=directory_generation.c.generation + 1))
        if directory:
            self.version += 1

    async def audit(self, conn: AsyncConnection, actor: str, action: str, target: str,
                     detail: Mapping[str, Any] | None = None) -> None:
        await conn.execute(audit_log.insert().values(
            at=time.time(), actor=actor[:64], action=action, target=target[:320],
            detail=json.dumps(detail or {}, default=str, sort_keys=True)))

    async def mailboxes(self, conn: AsyncConnection, where: Any) -> list[Mailbox]:
        q = (sa.select(mailboxes, domains.c.name.label("domain_name"))
             .join(domains, domains.c.id == mailboxes.c.domain_id).where(where)
             .order_by(domains.c.name, mailboxes.c.name))
        rows = (await conn.execute(q)).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        al: dict[int, list[str]] = {i: [] for i in ids}
        cp: dict[int, list[str]] = {i: [] for i in ids}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            for r in await conn.execute(sa.select(aliases.c.mailbox_id, aliases.c.name)
                                        .where(aliases.c.mailbox_id.in_(part))
                                        .order_by(aliases.c.id)):
                al[r.mailbox_id].append(r.name)
            for r in await conn.execute(sa.select(copies.c.mailbox_id, copies.c.address)
                                        .where(copies.c.mailbox_id.in_(part))
                                        .order_by(copies.c.position)):
                cp[r.mailbox_id].append(r.address)
        return [mailbox_from(r._mapping, r.domain_name, tuple(al[r.id]), tuple(cp[r.id]))
                for r in rows]

