"""Store part for DKIM keys: which selectors a domain has, since when each signs and until
when it stays published. The private keys are files (auth.dkimkeys writes and reads them)."""

from __future__ import annotations

import sqlalchemy as sa

from mailpolicy.core.dkimkey import DkimKey
from mailpolicy.store.db import Db
from mailpolicy.store.errors import Conflict, NotFound
from mailpolicy.store.schema import domains
from mailpolicy.store.schema_outgoing import dkim_keys


class DkimKeys:
    """DKIM key rows of the domains."""

    def __init__(self, db: Db) -> None:
        self.db = db

    async def list(self, domain: str) -> list[DkimKey]:
        """Every key of the domain (retired ones too), oldest first."""
        q = (sa.select(dkim_keys, domains.c.name.label("domain_name"))
             .join(domains, domains.c.id == dkim_keys.c.domain_id)
             .where(domains.c.name == domain).order_by(dkim_keys.c.active_from, dkim_keys.c.id))
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        return [DkimKey(r.domain_name, r.selector, r.algorithm, r.public_key, r.key_file,
                        r.created_at, r.active_from, r.retire_at) for r in rows]

    async def add(self, key: DkimKey, *, retire_others_at: float | None = None,
                  actor: str = "admin") -> None:
        """Record a new key; with `retire_others_at`, the domain's keys of the same algorithm
        that are not retired yet are retired then (rotation)."""
        async with self.db.write(directory=False) as conn:
            did = await conn.scalar(sa.select(domains.c.id).where(domains.c.name == key.domain))
            if did is None:
                raise NotFound(f"no domain {key.domain}", "name")
            if await conn.scalar(sa.select(dkim_keys.c.id).where(
                    dkim_keys.c.domain_id == did, dkim_keys.c.selector == key.selector)):
                raise Conflict(f"selector {key.selector} exists for {key.domain}", "selector")
            if retire_others_at is not None:
                await conn.execute(dkim_keys.update().where(
                    dkim_keys.c.domain_id == did, dkim_keys.c.algorithm == key.algorithm,
                    sa.or_(dkim_keys.c.retire_at.is_(None),
                           dkim_keys.c.retire_at > retire_others_at))
                    .values(retire_at=retire_others_at))
            await conn.execute(dkim_keys.insert().values(
                domain_id=did, selector=key.selector, algorithm=key.algorithm,
                public_key=key.public_key, key_file=key.key_file, created_at=key.created_at,
                active_from=key.active_from, retire_at=key.retire_at))
            await self.db.audit(conn, actor, "domain.dkim_key", key.domain,
                                {"selector": key.selector, "algorithm": key.algorithm,
                                 "active_from": key.active_from,
                                 "retire_others_at": retire_others_at})

    async def selectors(self, domain: str) -> set[str]:
        return {k.selector for k in await self.list(domain)}
