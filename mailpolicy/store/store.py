"""The Store: the Directory implementation over SQL plus validated, audited writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailpolicy.core.model import DefaultAction, Domain, Mailbox, Node
from mailpolicy.core.outbound import least_used
from mailpolicy.store import integrity, passwords
from mailpolicy.store import validate as v
from mailpolicy.store.changes import GenerationWatcher
from mailpolicy.store.db import Db, dialect_insert
from mailpolicy.store.dkimkeys import DkimKeys
from mailpolicy.store.engine import make_engine, migrate
from mailpolicy.store.errors import Conflict, Invalid, NotFound
from mailpolicy.store.fastread import SqliteReader, domain_from
from mailpolicy.store.mailstate import Autoresponders, Tokens
from mailpolicy.store.nodes import Nodes
from mailpolicy.store.schema import (
    aliases,
    audit_log,
    copies,
    domains,
    mailboxes,
)
from mailpolicy.store.schema import ip_pool as ip_pool_t
from mailpolicy.store.sending import Sending

_DOMAIN_FIELDS = ("owner", "outbound_ip", "default_action", "redirect_to", "dmarc",
                  "dmarc_policy", "dmarc_rua", "dmarc_adkim", "dmarc_aspf", "tls_cert", "tls_key",
                  "postmaster")
_MAILBOX_FIELDS = ("password", "aliases", "max_size", "copies_to", "no_save", "enabled")


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.strip().rpartition("@")
    if not at:
        raise Invalid("address", f"not an address: {address!r}")
    return v.mailbox_name(local.lower(), "name"), v.domain_name(domain, "domain")


class Store:
    """SQL-backed directory. Reads never lock; every write is one audited transaction."""

    def __init__(self, engine: AsyncEngine, ip_pool: tuple[str, ...] = ("127.0.0.1",),
                 reader: SqliteReader | None = None, *, postmaster: str = "",
                 min_password: int = v.MIN_PASSWORD) -> None:
        self.engine = engine
        self.postmaster = postmaster  # admin-wide postmaster@/abuse@ target for new domains
        self.min_password = min_password
        self.db = Db(engine)
        self.ip_pool = ip_pool
        self.reader = reader  # SQLite: the fast path for per-recipient lookups
        self.autoreplies = Autoresponders(self.db, self.get_mailbox)
        self.tokens = Tokens(self.db, self.get_mailbox)
        self.sending = Sending(self.db, self.get_mailbox)
        self.dkim = DkimKeys(self.db)
        self.nodes = Nodes(self.db)
        # PostgreSQL: directory changes of other processes and nodes (LISTEN/NOTIFY + poll)
        self.watcher = (GenerationWatcher(engine.url.render_as_string(hide_password=False))
                        if reader is None and engine.dialect.name == "postgresql" else None)

    @property
    def version(self) -> int:
        """Bumped by every committed directory write of this process (cache invalidation)."""
        return self.db.version

    @classmethod
    async def open(cls, url: str, *, ip_pool: Iterable[str] | None = None,
                   busy_timeout_ms: int = 5000, postmaster: str = "",
                   min_password: int = v.MIN_PASSWORD) -> Store:
        """Open (and migrate) the store at `url`."""
        engine = make_engine(url, busy_timeout_ms)
        await migrate(engine)
        store = cls(engine, tuple(ip_pool) if ip_pool is not None else ("127.0.0.1",),
                    SqliteReader.for_url(url, busy_timeout_ms), postmaster=postmaster,
                    min_password=min_password)
        async with store.db.write() as conn:
            for ip in store.ip_pool:
                exists = await conn.scalar(sa.select(ip_pool_t.c.address).where(
                    ip_pool_t.c.address == ip))
                if exists is None:  # processes starting at once on PostgreSQL: no conflict
                    await conn.execute(dialect_insert(conn, ip_pool_t).values(address=ip)
                                       .on_conflict_do_nothing())
        return store

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.watcher is not None:
            await self.watcher.close()
        await self.engine.dispose()

    # ---------------------------------------------------------------- reads
    def generation(self) -> object | None:
        """The directory generation, moved by every directory write of any process; read
        synchronously (SQLite's read-only connection) or kept by the PostgreSQL watcher;
        None where neither can be done."""
        if self.reader is not None:
            return self.reader.generation()
        return self.watcher.stamp() if self.watcher is not None else None

    @property
    def reads_synchronously(self) -> bool:
        """get_domain and find_mailbox never wait (the SQLite read-only connection answers
        them on the calling thread), so their coroutines finish on their first step."""
        return self.reader is not None

    async def get_domain(self, name: str) -> Domain | None:
        if self.reader is not None:
            return self.reader.get_domain(name)
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(domains).where(domains.c.name == name))).first()
        return domain_from(row._mapping) if row else None

    async def list_domains(self) -> list[Domain]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(domains).order_by(domains.c.name))).all()
        return [domain_from(r._mapping) for r in rows]

    async def find_mailbox(self, domain: str, local: str) -> tuple[Mailbox, bool] | None:
        """The mailbox named `local` in `domain`, else the one with that alias."""
        if self.reader is not None:
            return self.reader.find_mailbox(domain, local)
        async with self.db.read() as conn:
            found = await self.db.mailboxes(conn, sa.and_(domains.c.name == domain,
                                                        mailboxes.c.name == local))
            if found:
                return found[0], False
            mid = await conn.scalar(
                sa.select(aliases.c.mailbox_id).join(domains, domains.c.id == aliases.c.domain_id)
                .where(domains.c.name == domain, aliases.c.name == local))
            if mid is None:
                return None
            found = await self.db.mailboxes(conn, mailboxes.c.id == mid)
        return (found[0], True) if found else None

    async def get_node(self, name: str) -> Node | None:
        """A node of the cluster (where its LMTP server and Dovecot are reached)."""
        return await self.nodes.get(name)

    async def get_mailbox(self, address: str) -> Mailbox | None:
        try:
            name, domain = _split(address)
        except Invalid:
            return None
        async with self.db.read() as conn:
            found = await self.db.mailboxes(conn, sa.and_(domains.c.name == domain,
                                                        mailboxes.c.name == name))
        return found[0] if found else None

    async def list_mailboxes(self, domain: str | None = None) -> list[Mailbox]:
        async with self.db.read() as conn:
            where = domains.c.name == domain if domain else sa.true()
            return await self.db.mailboxes(conn, where)

    async def domains_per_ip(self) -> dict[str, int]:
        async with self.db.read() as conn:
            rows = await conn.execute(sa.select(domains.c.outbound_ip, sa.func.count())
                                      .group_by(domains.c.outbound_ip))
            return {r[0]: r[1] for r in rows}

    async def list_audit(self, limit: int = 100, target: str | None = None,
                         ) -> list[dict[str, Any]]:
        """Audit rows, newest first: id, at (ISO 8601, UTC), actor, action, target, detail."""
        q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if target is not None:
            q = q.where(audit_log.c.target == target)
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        return [{**r._mapping, "at": dt.datetime.fromtimestamp(r.at, dt.UTC).isoformat()}
                for r in rows]

    # ---------------------------------------------------------------- domain writes
    async def _domain_values(self, name: str, fields: Mapping[str, Any],
                             current: Domain | None) -> dict[str, Any]:
        unknown = set(fields) - set(_DOMAIN_FIELDS)
        if unknown:
            field = sorted(unknown)[0]
            raise Invalid(field, f"{field} cannot be set" if field != "name"
                          else "a domain's name cannot change")
        merged = {f: getattr(current, f) for f in _DOMAIN_FIELDS} if current else {}
        merged.update({k: val for k, val in fields.items() if val is not None})
        out: dict[str, Any] = {"owner": v.owner(merged.get("owner", ""))}
        action = v.default_action(merged.get("default_action", "reject"))
        out["default_action"] = action.value
        rt = merged.get("redirect_to", "")
        if "default_action" in fields and "redirect_to" not in fields and action in (
                DefaultAction.REJECT, DefaultAction.DISCARD):
            rt = ""
        out["redirect_to"] = v.redirect_to(action, rt, name)
        ip = merged.get("outbound_ip", "") or "auto"
        if ip == "auto" and not self.ip_pool:  # no routable address: Postfix's default one
            ip = ""
        elif ip == "auto":
            if current and current.outbound_ip and "outbound_ip" not in fields:
                ip = current.outbound_ip
            else:
                per_ip = await self.domains_per_ip()
                if current:
                    per_ip[current.outbound_ip] = per_ip.get(current.outbound_ip, 1) - 1
                ip = least_used(self.ip_pool, per_ip)
        out["outbound_ip"] = v.ip_address(ip, self.ip_pool) if ip else ""
        dmarc = merged.get("dmarc", False)
        if not isinstance(dmarc, bool):
            raise Invalid("dmarc", "must be true or false")
        out["dmarc"] = dmarc
        pol = merged.get("dmarc_policy", "none")
        if pol not in ("none", "quarantine", "reject"):
            raise Invalid("dmarc_policy", "must be none, quarantine or reject")
        out["dmarc_policy"] = pol
        for f in ("dmarc_adkim", "dmarc_aspf"):
            if merged.get(f, "r") not in ("r", "s"):
                raise Invalid(f, "must be r (relaxed) or s (strict)")
            out[f] = merged.get(f, "r")
        rua = merged.get("dmarc_rua", "") or ""
        out["dmarc_rua"] = v.header_text(rua, "dmarc_rua", 254)
        if rua:
            from mailpolicy.core.addresses import AddressError, parse_target
            try:
                parse_target(rua.removeprefix("mailto:"))
            except AddressError as e:
                raise Invalid("dmarc_rua", str(e)) from None
        cert, key = merged.get("tls_cert", "") or "", merged.get("tls_key", "") or ""
        if bool(cert) != bool(key):
            raise Invalid("tls_cert" if not cert else "tls_key",
                          "a TLS certificate needs both tls_cert and tls_key")
        if cert and (cert, key) != ((current.tls_cert, current.tls_key) if current else None):
            from mailpolicy.core.tlscert import CertificateError, check_certificate
            try:
                await asyncio.to_thread(check_certificate, cert, key, name)
            except CertificateError as e:
                raise Invalid("tls_cert", str(e)) from None
        out["tls_cert"], out["tls_key"] = cert, key
        pm = merged.get("postmaster", "") if current or "postmaster" in fields else (
            self.postmaster)
        out["postmaster"] = v.postmaster(pm or "")
        proposed = Domain(name=name, id=current.id if current else 0,
                          default_action=action, redirect_to=out["redirect_to"],
                          postmaster=out["postmaster"])
        await integrity.check_domain(
            self, proposed,
            targets=current is None or bool({"default_action", "redirect_to"} & set(fields)),
            postmaster="postmaster" in fields)
        return out

    async def create_domain(self, name: str, *, actor: str = "admin", **fields: Any) -> Domain:
        dname = v.domain_name(name)
        values = await self._domain_values(dname, fields, None)
        try:
            async with self.db.write() as conn:
                if await conn.scalar(sa.select(domains.c.id).where(domains.c.name == dname)):
                    raise Conflict(f"domain {dname} exists", "name")
                await conn.execute(domains.insert().values(name=dname, created_at=time.time(),
                                                           **values))
                await self.db.audit(conn, actor, "domain.create", dname, values)
        except IntegrityError:
            raise Conflict(f"domain {dname} exists", "name") from None
        d = await self.get_domain(dname)
        assert d is not None
        return d

    async def update_domain(self, name: str, *, actor: str = "admin", **fields: Any) -> Domain:
        dname = v.domain_name(name)
        current = await self.get_domain(dname)
        if current is None:
            raise NotFound(f"no domain {dname}", "name")
        values = await self._domain_values(dname, fields, current)
        async with self.db.write() as conn:
            await conn.execute(domains.update().where(domains.c.id == current.id).values(**values))
            await self.db.audit(conn, actor, "domain.update", dname, fields)
        d = await self.get_domain(dname)
        assert d is not None
        return d

    async def domain_dependants(self, name: str) -> integrity.Dependants:
        """What other domains and mailboxes have pointing into domain `name`."""
        return integrity.domain_dependants(v.domain_name(name), await self.list_domains(),
                                           await self.list_mailboxes())

    async def delete_domain(self, name: str, *, actor: str = "admin",
                            cascade: bool = False, force: bool = False,
                            cleared: list[str] | None = None) -> list[Mailbox]:
        """Delete a domain; with `cascade` also its mailboxes (returned, so their Maildirs can
        be removed), else refuse while it has any. Refused while other domains redirect into
        it or mailboxes copy into it; with `force` those are cleared (described in
        `cleared`); other domains' postmaster addresses in it move to their first mailbox."""
        dname = v.domain_name(name)
        deps = await self.domain_dependants(dname)
        if deps and not force:
            integrity.refuse(f"domain {dname}", deps, "name")
        plan = integrity.plan_clearing(
            deps, lambda c: (integrity.key(c) or "").endswith("@" + dname),
            await self.list_mailboxes(),
            self.postmaster)
        lines = plan.lines()
        async with self.db.write() as conn:
            await integrity.apply_clearing(conn, plan)
            did = await conn.scalar(sa.select(domains.c.id).where(domains.c.name == dname))
            if did is None:
                raise NotFound(f"no domain {dname}", "name")
            boxes = await self.db.mailboxes(conn, mailboxes.c.domain_id == did)
            if boxes and not cascade:
                raise Conflict(f"domain {dname} still has {len(boxes)} mailbox(es)", "name")
            await conn.execute(domains.delete().where(domains.c.id == did))
            await self.db.audit(conn, actor, "domain.delete", dname,
                              {"mailboxes": [b.name for b in boxes],
                               **({"cleared": lines} if lines else {})})
        if cleared is not None:
            cleared.extend(lines)
        return boxes

    # ---------------------------------------------------------------- mailbox writes
    async def _check_names(self, conn: AsyncConnection, domain_id: int, names: Iterable[str],
                           mailbox_id: int | None, field: str = "aliases") -> None:
        """Names must be unique among the domain's mailboxes and aliases."""
        for n in names:
            mb = await conn.scalar(sa.select(mailboxes.c.id).where(
                mailboxes.c.domain_id == domain_id, mailboxes.c.name == n))
            if mb is not None and mb != mailbox_id:
                raise Conflict(f"{n!r} is already a mailbox of this domain", field)
            al = await conn.scalar(sa.select(aliases.c.mailbox_id).where(
                aliases.c.domain_id == domain_id, aliases.c.name == n))
            if al is not None and al != mailbox_id:
                raise Conflict(f"{n!r} is already an alias in this domain", field)

    async def _mailbox_values(self, name: str, domain: str, fields: Mapping[str, Any],
                              current: Mailbox | None) -> dict[str, Any]:
        unknown = set(fields) - set(_MAILBOX_FIELDS)
        if unknown:
            field = sorted(unknown)[0]
            raise Invalid(field, "a mailbox's name and domain cannot change"
                          if field in ("name", "domain", "address") else f"{field} cannot be set")
        own = f"{name}@{domain}"
        cur: dict[str, Any] = ({"aliases": current.aliases, "max_size": current.max_size,
                                "copies_to": current.copies_to, "no_save": current.no_save,
                                "enabled": current.enabled} if current else {})
        cur.update({k: val for k, val in fields.items() if val is not None and k != "password"})
        out: dict[str, Any] = {
            "aliases": v.alias_names(cur.get("aliases", ()), name),
            "max_size": v.max_size(cur.get("max_size")),
            "copies_to": v.copy_targets(cur.get("copies_to", ()), domain, own),
        }
        for f in ("no_save", "enabled"):
            val = cur.get(f, f == "enabled")
            if not isinstance(val, bool):
                raise Invalid(f, "must be true or false")
            out[f] = val
        if out["no_save"] and not out["copies_to"]:
            raise Invalid("no_save", "do-not-save needs at least one copies-to address")
        if "copies_to" in fields or "aliases" in fields:
            await integrity.check_copies(self, Mailbox(
                name=name, domain=domain, aliases=out["aliases"], copies_to=out["copies_to"],
                id=current.id if current else 0))
        pw = fields.get("password")
        if pw is not None:
            if not isinstance(pw, str):
                raise Invalid("password", "must be a string")
            try:
                passwords.check_password(pw)
            except ValueError as e:
                raise Invalid("password", str(e)) from None
            v.password_strength(pw, own, self.min_password)
            out["password_hash"] = await asyncio.to_thread(passwords.hash_password, pw)
        return out

    async def _save_lists(self, conn: AsyncConnection, mailbox_id: int, domain_id: int,
                          values: Mapping[str, Any]) -> None:
        await conn.execute(aliases.delete().where(aliases.c.mailbox_id == mailbox_id))
        await conn.execute(copies.delete().where(copies.c.mailbox_id == mailbox_id))
        for a in values["aliases"]:
            await conn.execute(aliases.insert().values(mailbox_id=mailbox_id, domain_id=domain_id,
                                                       name=a))
        for i, c in enumerate(values["copies_to"]):
            await conn.execute(copies.insert().values(mailbox_id=mailbox_id, address=c,
                                                      position=i))

    async def create_mailbox(self, address: str, *, actor: str = "admin",
                             node: str | None = None, **fields: Any) -> Mailbox:
        """Create a mailbox, at home on `node` or else on the active node with the fewest
        bytes stored (see Nodes.home_for)."""
        name, dname = _split(address)
        domain = await self.get_domain(dname)
        if domain is None:
            raise Invalid("domain", f"no mail domain {dname}")
        values = await self._mailbox_values(name, dname, fields, None)
        try:
            async with self.db.write() as conn:
                await self._check_names(conn, domain.id, [name], None, "name")
                await self._check_names(conn, domain.id, values["aliases"], None)
                home = await self.nodes.home_for(conn, node)
                res = await conn.execute(mailboxes.insert().values(home_node=home,
                    domain_id=domain.id, name=name, password_hash=values.get("password_hash", ""),
                    max_size=values["max_size"], no_save=values["no_save"],
                    enabled=values["enabled"], created_at=time.time()))
                key = res.inserted_primary_key
                assert key is not None  # an INSERT of one row
                mid = int(key[0])
                await self._save_lists(conn, mid, domain.id, values)
                if not domain.postmaster:  # the first mailbox receives postmaster@, abuse@
                    await conn.execute(domains.update().where(domains.c.id == domain.id)
                                       .values(postmaster=f"{name}@{dname}"))
                await self.db.audit(conn, actor, "mailbox.create", f"{name}@{dname}",
                                  {k: val for k, val in values.items() if k != "password_hash"}
                                  | ({"home_node": home} if home else {}))
        except IntegrityError:
            raise Conflict(f"{name}@{dname} exists", "name") from None
        mb = await self.get_mailbox(f"{name}@{dname}")
        assert mb is not None
        return mb

    async def update_mailbox(self, address: str, *, actor: str = "admin",
                             **fields: Any) -> Mailbox:
        current = await self.get_mailbox(address)
        if current is None:
            raise NotFound(f"no mailbox {address}", "address")
        values = await self._mailbox_values(current.name, current.domain, fields, current)
        gone = [f"{a}@{current.domain}" for a in current.aliases if a not in values["aliases"]]
        if gone:
            deps = await self._dependants(gone)
            if deps:
                integrity.refuse(f"alias {', '.join(gone)}", deps, "aliases", force=False)
        async with self.db.write() as conn:
            did = await conn.scalar(sa.select(mailboxes.c.domain_id).where(
                mailboxes.c.id == current.id))
            if did is None:  # removed since get_mailbox() above
                raise NotFound(f"no mailbox {address}", "address")
            await self._check_names(conn, did, values["aliases"], current.id)
            row = {k: values[k] for k in ("max_size", "no_save", "enabled")}
            if "password_hash" in values:
                row["password_hash"] = values["password_hash"]
            await conn.execute(mailboxes.update().where(mailboxes.c.id == current.id).values(**row))
            await self._save_lists(conn, current.id, did, values)
            changed = {k: ("***" if k == "password" else val) for k, val in fields.items()}
            await self.db.audit(conn, actor, "mailbox.update", current.address, changed)
        mb = await self.get_mailbox(current.address)
        assert mb is not None
        return mb

    async def _dependants(self, addresses: list[str]) -> integrity.Dependants:
        return integrity.dependants(addresses, await self.list_domains(),
                                    await self.list_mailboxes())

    async def check_delete_mailbox(self, address: str, *, force: bool = False) -> None:
        """Raise what delete_mailbox would refuse with, changing nothing."""
        current = await self.get_mailbox(address)
        if current is None:
            raise NotFound(f"no mailbox {address}", "address")
        deps = await self._dependants(
            [current.address, *(f"{a}@{current.domain}" for a in current.aliases)])
        if deps and not force:
            integrity.refuse(f"mailbox {current.address}", deps)

    async def delete_mailbox(self, address: str, *, actor: str = "admin", force: bool = False,
                             cleared: list[str] | None = None) -> Mailbox:
        """Delete a mailbox. Refused while a domain redirects to it (or to one of its
        aliases), has it as postmaster, or a mailbox copies to it; with `force` those are
        cleared in the same transaction and described in `cleared`."""
        current = await self.get_mailbox(address)
        if current is None:
            raise NotFound(f"no mailbox {address}", "address")
        names = [current.address, *(f"{a}@{current.domain}" for a in current.aliases)]
        deps = await self._dependants(names)
        if deps and not force:
            integrity.refuse(f"mailbox {current.address}", deps)
        keys = integrity.keys_of(names)
        plan = integrity.plan_clearing(deps, lambda c: integrity.key(c) in keys,
                                       await self.list_mailboxes(), self.postmaster,
                                       deleted=[current.id])
        lines = plan.lines()
        async with self.db.write() as conn:
            await integrity.apply_clearing(conn, plan)
            await conn.execute(mailboxes.delete().where(mailboxes.c.id == current.id))
            await self.db.audit(conn, actor, "mailbox.delete", current.address,
                                {"cleared": lines} if lines else None)
        if cleared is not None:
            cleared.extend(lines)
        return current

    async def audit(self, actor: str, action: str, target: str,
                    detail: Mapping[str, Any] | None = None) -> None:
        """Record an action done outside the store (clear contents, log-in-as)."""
        async with self.db.write(directory=False) as conn:
            await self.db.audit(conn, actor, action, target, detail)
