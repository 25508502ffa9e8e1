"""Store part for sending: sender grants, per-mailbox send limits, and the hourly counters
(atomic upserts: exact across policy workers and hosts sharing the store)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mailpolicy.core.model import Mailbox
from mailpolicy.core.senders import normalize_grant
from mailpolicy.store.db import Db
from mailpolicy.store.errors import Invalid, NotFound
from mailpolicy.store.schema import domains, mailboxes
from mailpolicy.store.schema_outgoing import send_counters, send_grants, send_limits

MailboxLookup = Callable[[str], Awaitable[Mailbox | None]]
WINDOW = 3600  # seconds: limits are per hour, counted in fixed hour windows
MAX_GRANTS = 100
MAX_LIMIT = 10_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to enforce: the counter key, and the most messages/recipients per hour
    (0 = no limit). `name` is how the refusal names it."""

    key: str
    messages: int
    recipients: int
    name: str


class _Over(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


def limit_value(value: object, field: str) -> int | None:
    """A per-hour limit as stored: None (the default) or 0..MAX_LIMIT; Invalid otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise Invalid(field, f"must be a whole number from 0 (no limit) to {MAX_LIMIT}, "
                             "or null (the configured default)")
    return value


class Sending:
    """Grants, limits and counters."""

    def __init__(self, db: Db, mailbox: MailboxLookup) -> None:
        self.db = db
        self.get_mailbox = mailbox

    async def _mailbox(self, address: str) -> Mailbox:
        mb = await self.get_mailbox(address)
        if mb is None:
            raise NotFound(f"no mailbox {address}", "address")
        return mb

    # ---------------------------------------------------------------- grants
    async def grants(self, mailbox_id: int) -> tuple[str, ...]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(send_grants.c.address).where(
                send_grants.c.mailbox_id == mailbox_id).order_by(send_grants.c.id))
            return tuple(r[0] for r in rows)

    async def set_grants(self, address: str, values: Iterable[str], *,
                         actor: str = "admin") -> tuple[str, ...]:
        """Replace the addresses (`user@domain`, `@domain`) the mailbox may also send as."""
        mb = await self._mailbox(address)
        if isinstance(values, str):
            raise Invalid("may_send_as", "must be a list of addresses")
        grants: list[str] = []
        for v in values:
            if not isinstance(v, str):
                raise Invalid("may_send_as", "must be a list of addresses")
            try:
                g = normalize_grant(v)
            except ValueError as e:
                raise Invalid("may_send_as", str(e)) from None
            if g not in grants:
                grants.append(g)
        if len(grants) > MAX_GRANTS:
            raise Invalid("may_send_as", f"at most {MAX_GRANTS} addresses")
        async with self.db.write() as conn:
            await conn.execute(send_grants.delete().where(send_grants.c.mailbox_id == mb.id))
            for g in grants:
                await conn.execute(send_grants.insert().values(mailbox_id=mb.id, address=g))
            await self.db.audit(conn, actor, "mailbox.may_send_as", mb.address,
                                {"may_send_as": grants})
        return tuple(grants)

    async def granted(self, address: str, domain_key: str) -> list[str]:
        """Logins of enabled mailboxes granted `address` (no +ext, lowercase) or `@domain`."""
        q = (sa.select(mailboxes.c.name, domains.c.name)
             .select_from(send_grants.join(mailboxes, mailboxes.c.id == send_grants.c.mailbox_id)
                          .join(domains, domains.c.id == mailboxes.c.domain_id))
             .where(send_grants.c.address.in_((address, domain_key)),
                    mailboxes.c.enabled == sa.true())
             .order_by(send_grants.c.id))
        async with self.db.read() as conn:
            return list(dict.fromkeys(f"{n}@{d}" for n, d in await conn.execute(q)))

    # ---------------------------------------------------------------- limits
    async def limits(self, mailbox_id: int) -> tuple[int | None, int | None]:
        """(messages, recipients) per hour of the mailbox's own limits (None: the default)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(send_limits).where(
                send_limits.c.mailbox_id == mailbox_id))).first()
        return (row.messages_per_hour, row.recipients_per_hour) if row else (None, None)

    async def set_limits(self, address: str, *, messages_per_hour: object = None,
                         recipients_per_hour: object = None, actor: str = "admin",
                         ) -> tuple[int | None, int | None]:
        """Set the mailbox's own limits (None = the configured default)."""
        mb = await self._mailbox(address)
        m = limit_value(messages_per_hour, "messages_per_hour")
        r = limit_value(recipients_per_hour, "recipients_per_hour")
        async with self.db.write(directory=False) as conn:
            await conn.execute(send_limits.delete().where(send_limits.c.mailbox_id == mb.id))
            if m is not None or r is not None:
                await conn.execute(send_limits.insert().values(
                    mailbox_id=mb.id, messages_per_hour=m, recipients_per_hour=r))
            await self.db.audit(conn, actor, "mailbox.send_limits", mb.address,
                                {"messages_per_hour": m, "recipients_per_hour": r})
        return m, r

    # ---------------------------------------------------------------- counters
    async def _bump(self, conn: AsyncConnection, key: str, window: int, messages: int,
                    recipients: int) -> tuple[int, int]:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(send_counters).values(key=key, hour=window, messages=messages,
                                            recipients=recipients)
        stmt = stmt.on_conflict_do_update(
            index_elements=[send_counters.c.key, send_counters.c.hour],
            set_={"messages": send_counters.c.messages + messages,
                  "recipients": send_counters.c.recipients + recipients})
        await conn.execute(stmt)
        row = (await conn.execute(sa.select(send_counters.c.messages, send_counters.c.recipients)
                                  .where(send_counters.c.key == key,
                                         send_counters.c.hour == window))).one()
        return int(row[0]), int(row[1])

    async def count(self, limits: Iterable[Limit], messages: int, recipients: int,
                    now: float | None = None) -> str | None:
        """Count one message with `recipients` recipients against every limit, all or nothing,
        in one transaction: None when it fits (and is counted), else the text naming the limit
        it would exceed (and nothing is counted)."""
        window = int((time.time() if now is None else now) // WINDOW)
        try:
            async with self.db.write(directory=False) as conn:
                for lim in limits:
                    m, r = await self._bump(conn, lim.key, window, messages, recipients)
                    if lim.messages and m > lim.messages:
                        raise _Over(f"{lim.name} limit of {lim.messages} messages per hour")
                    if lim.recipients and r > lim.recipients:
                        raise _Over(f"{lim.name} limit of {lim.recipients} recipients per hour")
                    if m == messages:  # the key's first message this hour: drop older hours
                        await conn.execute(send_counters.delete().where(
                            send_counters.c.key == lim.key, send_counters.c.hour < window))
        except _Over as e:
            return e.what
        return None
