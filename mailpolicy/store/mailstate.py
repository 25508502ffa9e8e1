"""Store parts for the autoresponder (settings, race-safe reply claims) and log-in-as tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from mailpolicy.core.model import Attachment, Autoresponder, Mailbox
from mailpolicy.store import validate as v
from mailpolicy.store.db import Db, dialect_insert
from mailpolicy.store.errors import Invalid, NotFound
from mailpolicy.store.schema import autoreply_log, autoresponders, domains, mailboxes, tokens

MailboxLookup = Callable[[str], Awaitable[Mailbox | None]]


class Autoresponders:
    """Autoresponder settings and the once-per-interval reply claims."""

    def __init__(self, db: Db, mailbox: MailboxLookup) -> None:
        self.db = db
        self.get_mailbox = mailbox

    async def get(self, mailbox_id: int) -> Autoresponder | None:
        async with self.db.read() as conn:
            r = (await conn.execute(sa.select(autoresponders).where(
                autoresponders.c.mailbox_id == mailbox_id))).first()
        if r is None:
            return None
        att = (Attachment(r.attachment_name, r.attachment_type or "application/octet-stream",
                          r.attachment_data) if r.attachment_name and r.attachment_data is not None
               else None)
        return Autoresponder(mailbox_id=r.mailbox_id, enabled=bool(r.enabled), from_=r.from_addr,
                             subject=r.subject, message=r.message, start=r.start_date,
                             end=r.end_date, interval_days=r.interval_days, attachment=att)

    async def active(self, domain: str | None = None) -> set[int]:
        """Ids of mailboxes whose autoresponder is enabled and has a message."""
        q = (sa.select(autoresponders.c.mailbox_id)
             .join(mailboxes, mailboxes.c.id == autoresponders.c.mailbox_id)
             .join(domains, domains.c.id == mailboxes.c.domain_id)
             .where(autoresponders.c.enabled == sa.true(), autoresponders.c.message != ""))
        if domain:
            q = q.where(domains.c.name == domain)
        async with self.db.read() as conn:
            return {r[0] for r in await conn.execute(q)}

    async def set(self, address: str, *, actor: str = "admin",
                                **fields: Any) -> Autoresponder:
        """Create or change a mailbox's autoresponder; only the given fields change.
        `attachment`: an Attachment, or False to remove it."""
        mb = await self.get_mailbox(address)
        if mb is None:
            raise NotFound(f"no mailbox {address}", "address")
        allowed = {"enabled", "from_", "subject", "message", "start", "end", "interval_days",
                   "attachment"}
        unknown = set(fields) - allowed
        if unknown:
            raise Invalid(sorted(unknown)[0], "unknown autoresponder field")
        cur = await self.get(mb.id) or Autoresponder(mailbox_id=mb.id)
        row: dict[str, Any] = {}
        if fields.get("enabled") is not None:
            if not isinstance(fields["enabled"], bool):
                raise Invalid("enabled", "must be true or false")
            row["enabled"] = fields["enabled"]
        if fields.get("from_") is not None:
            row["from_addr"] = v.from_header(fields["from_"])
        if fields.get("subject") is not None:
            row["subject"] = v.header_text(fields["subject"], "subject", v.MAX_SUBJECT)
        if fields.get("message") is not None:
            row["message"] = v.message_text(fields["message"])
        start = v.date_or_none(fields["start"], "start") if "start" in fields else cur.start
        end = v.date_or_none(fields["end"], "end") if "end" in fields else cur.end
        if start and end and start > end:
            raise Invalid("end", "end date is before start date")
        row["start_date"], row["end_date"] = start, end
        if "interval_days" in fields:
            iv = fields["interval_days"]
            if iv is not None and (not isinstance(iv, int) or isinstance(iv, bool) or iv < 1
                                   or iv > 365):
                raise Invalid("interval_days", "must be a whole number of days from 1 to 365")
            row["interval_days"] = iv
        att = fields.get("attachment")
        if att is False:
            row.update(attachment_name=None, attachment_type=None, attachment_data=None)
        elif isinstance(att, Attachment):
            row.update(attachment_name=v.filename(att.filename),
                       attachment_type=v.header_text(att.content_type, "attachment", 255),
                       attachment_data=att.data)
        elif att is not None:
            raise Invalid("attachment", "must be a file")
        async with self.db.write() as conn:
            exists = await conn.scalar(sa.select(autoresponders.c.mailbox_id).where(
                autoresponders.c.mailbox_id == mb.id))
            if exists is None:
                await conn.execute(autoresponders.insert().values(mailbox_id=mb.id, **row))
            else:
                await conn.execute(autoresponders.update().where(
                    autoresponders.c.mailbox_id == mb.id).values(**row))
            detail = {k: val for k, val in row.items() if k != "attachment_data"}
            await self.db.audit(conn, actor, "autoresponder.set", mb.address, detail)
        ar = await self.get(mb.id)
        assert ar is not None
        return ar

    async def claim(self, mailbox_id: int, sender: str, response_key: str,
                              now: dt.datetime | float, interval: dt.timedelta | float) -> bool:
        """Atomically claim the right to answer `sender` now: False when this response went to
        this sender within `interval`. One upsert (INSERT ... ON CONFLICT DO UPDATE ... WHERE
        the last reply is old enough ... RETURNING): the row lock makes concurrent claims from
        any number of processes or nodes on one store serialise, and exactly one wins."""
        ts = now.timestamp() if isinstance(now, dt.datetime) else float(now)
        secs = interval.total_seconds() if isinstance(interval, dt.timedelta) else float(interval)
        async with self.db.write(directory=False) as conn:
            stmt = (dialect_insert(conn, autoreply_log).values(mailbox_id=mailbox_id, sender=sender,
                                  response_key=response_key, sent_at=ts)
                    .on_conflict_do_update(
                        index_elements=[autoreply_log.c.mailbox_id, autoreply_log.c.sender,
                                        autoreply_log.c.response_key],
                        set_={"sent_at": ts}, where=autoreply_log.c.sent_at <= ts - secs)
                    .returning(autoreply_log.c.sent_at))
            return (await conn.execute(stmt)).first() is not None

    async def release(self, mailbox_id: int, sender: str,
                                response_key: str) -> None:
        """Undo a claim whose reply could not be sent."""
        async with self.db.write(directory=False) as conn:
            await conn.execute(autoreply_log.delete().where(
                autoreply_log.c.mailbox_id == mailbox_id, autoreply_log.c.sender == sender,
                autoreply_log.c.response_key == response_key))



class Tokens:
    """Single-use "log in as the mail user" tokens (only their SHA-256 is stored)."""

    def __init__(self, db: Db, mailbox: MailboxLookup) -> None:
        self.db = db
        self.get_mailbox = mailbox

    async def create(self, address: str, *, actor: str = "admin",
                           ttl: float = 300.0) -> str:
        """A single-use token that lets an admin log in as the mail user."""
        mb = await self.get_mailbox(address)
        if mb is None:
            raise NotFound(f"no mailbox {address}", "address")
        token = secrets.token_urlsafe(32)
        now = time.time()
        async with self.db.write(directory=False) as conn:
            await conn.execute(tokens.insert().values(
                token_hash=hashlib.sha256(token.encode()).hexdigest(), mailbox_id=mb.id,
                actor=actor[:64], created_at=now, expires_at=now + ttl))
            await self.db.audit(conn, actor, "mailbox.login_as", mb.address, {"ttl": ttl})
        return token

    async def consume(self, token: str) -> Mailbox | None:
        """The mailbox a valid, unexpired, unused token is for; the token is spent."""
        h = hashlib.sha256(token.encode()).hexdigest()
        async with self.db.write(directory=False) as conn:
            row = (await conn.execute(sa.select(tokens).where(tokens.c.token_hash == h))).first()
            if row is None or row.used or row.expires_at < time.time():
                return None
            await conn.execute(tokens.update().where(tokens.c.token_hash == h).values(used=True))
            found = await self.db.mailboxes(conn, mailboxes.c.id == row.mailbox_id)
        return found[0] if found else None
