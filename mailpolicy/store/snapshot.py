"""The whole directory in memory, compactly: a `Directory` whose lookups never touch SQLite.

Built once at start from one read transaction; kept current from the store's change log (the
`directory_changes` rows that SQLite triggers add for every domain, mailbox, alias and copy
written, migration 0006): every POLL_INTERVAL seconds the directory generation is read and,
when it moved, the changed domains and mailboxes are read again into a small overlay. A write
made through this process's own Store is applied at the next lookup; before a lookup answers
"no such domain or mailbox" the one-row generation is read, so an address provisioned a
moment ago is never refused (lookups themselves never ask SQLite). resolve() runs over it as
over the SQL store and answers the same, except that a Mailbox from here has no password hash
(`password_hash` is ""): no lookup service reads it; Dovecot and the admin API read it in SQL.

Compact form (~120 bytes per address resident at a million, 72 of them the index): every key
`local@domain` (mailbox names and aliases) in one bytes object with an array of offsets and an
open-addressing hash table of entry numbers; per mailbox a few machine-word arrays (id, domain
id, max size, flags); names, aliases and copies as objects only for the mailboxes that have
aliases or copies. Changes go to a dict overlay; a large change (a bulk import), a pruned
change log or a large overlay rebuilds the base in a thread while the old one answers (then
the change is seen once the rebuild is done, seconds at a million mailboxes).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

from mailpolicy.core.addresses import split_extension
from mailpolicy.core.model import Domain, Mailbox
from mailpolicy.store.fastread import domain_from

log = structlog.get_logger("mailpolicy.store")

POLL_INTERVAL = 0.1  # seconds between two looks at the directory generation (as the caches)
MAX_INCREMENTAL = 2_000  # change rows applied on the event loop; more: rebuild in a thread
MAX_OVERLAY = 50_000  # overlay keys before the base is rebuilt (in a thread)
_NO_SIZE = -1  # max_size None in the array
_NO_SAVE, _ENABLED = 1, 2  # flag bits

Found = tuple[Mailbox, bool]


class _Base:
    """An immutable compact index of every mailbox name and alias (see the module doc).

    Entry i of `blob` (between offsets[i] and offsets[i + 1]) is `local@domain`, NUL, a flag
    byte (0 a mailbox's name, 1 an alias) and the 4-byte row of its mailbox in the
    per-mailbox arrays. `slots` is an open-addressing hash table (linear probing, at most
    half full) of entry numbers. Built by add() as rows are read, so no list of a million
    objects is ever made."""

    __slots__ = ("blob", "domain_ids", "extras", "flags", "ids", "mask", "max_size", "n",
                 "offsets", "slots")

    def __init__(self, expected: int) -> None:
        size = 8
        while size < 2 * max(1, expected):
            size *= 2
        self.mask = size - 1
        self.slots = array("i", [-1]) * size
        self.blob = bytearray()
        self.offsets = array("I", [0])  # the blob stays under 4 GiB (~100 million keys)
        self.n = 0
        self.ids, self.domain_ids, self.max_size = array("q"), array("q"), array("q")
        self.flags = bytearray()
        self.extras: dict[int, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}

    def add_mailbox(self, mid: int, did: int, size: int | None, no_save: bool,
                    enabled: bool) -> int:
        """A new row for a mailbox; its keys come with add()."""
        self.ids.append(mid)
        self.domain_ids.append(did)
        self.max_size.append(_NO_SIZE if size is None else size)
        self.flags.append((_NO_SAVE if no_save else 0) | (_ENABLED if enabled else 0))
        return len(self.ids) - 1

    def add(self, key: bytes, row: int, alias: bool) -> None:
        """Index `key` (`local@domain`) for `row`; a mailbox's name beats an alias."""
        blob, offsets, slots, mask = self.blob, self.offsets, self.slots, self.mask
        if 2 * (self.n + 1) > len(slots):
            raise ValueError("more keys than the table was made for")
        h = hash(key) & mask
        while (i := slots[h]) >= 0:
            end = offsets[i + 1]
            if blob[offsets[i]:end - 6] == key:
                if alias or blob[end - 5] == 0:
                    return  # the first name (or alias) for a key stays
                break  # a name replaces an alias
            h = (h + 1) & mask
        blob += key
        blob += b"\x00\x01" if alias else b"\x00\x00"
        blob += row.to_bytes(4, "big")
        offsets.append(len(blob))
        slots[h] = self.n
        self.n += 1

    def seal(self) -> _Base:
        """Done adding: the blob becomes bytes (no growth room kept)."""
        self.blob = bytes(self.blob)  # type: ignore[assignment]
        return self

    def find(self, key: bytes) -> tuple[int, bool] | None:
        """(row, via alias) of the entry for `key`, or None."""
        blob, offsets, slots, mask = self.blob, self.offsets, self.slots, self.mask
        h = hash(key) & mask
        while (i := slots[h]) >= 0:
            end = offsets[i + 1]
            if blob[offsets[i]:end - 6] == key:
                return int.from_bytes(blob[end - 4:end], "big"), blob[end - 5] == 1
            h = (h + 1) & mask
        return None

    def mailbox(self, row: int, domain: str, name: str) -> Mailbox:
        """The mailbox at `row`; `name` is the local part it was found by (its own name
        unless found by an alias: then the name is in `extras`)."""
        flags = self.flags[row]
        size = self.max_size[row]
        extra = self.extras.get(row)
        aliases: tuple[str, ...] = ()
        copies: tuple[str, ...] = ()
        if extra is not None:
            name, aliases, copies = extra
        return Mailbox(id=self.ids[row], name=name, domain=domain, aliases=aliases,
                       max_size=None if size == _NO_SIZE else size, copies_to=copies,
                       no_save=bool(flags & _NO_SAVE), enabled=bool(flags & _ENABLED))


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                           isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _load(path: str) -> tuple[_Base, dict[str, Domain], int, int]:
    """Read the whole directory in one transaction: (base, domains by name, generation,
    last change id)."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        generation = conn.execute("SELECT generation FROM directory_generation").fetchone()
        last = conn.execute("SELECT max(id) FROM directory_changes").fetchone()[0] or 0
        conn.row_factory = sqlite3.Row
        domains = {r["id"]: domain_from(r) for r in conn.execute("SELECT * FROM domains")}
        conn.row_factory = None
        names = {i: d.name for i, d in domains.items()}
        aliases: dict[int, list[tuple[int, str]]] = {}
        for mid, did, name in conn.execute(
                "SELECT mailbox_id, domain_id, name FROM aliases ORDER BY id"):
            aliases.setdefault(mid, []).append((did, name))
        copies: dict[int, list[str]] = {}
        for mid, address in conn.execute(
                "SELECT mailbox_id, address FROM copies ORDER BY mailbox_id, position"):
            copies.setdefault(mid, []).append(address)
        count = conn.execute("SELECT count(*) FROM mailboxes").fetchone()[0]
        base = _Base(count + sum(map(len, aliases.values())))
        for mid, did, name, size, no_save, enabled in conn.execute(
                "SELECT id, domain_id, name, max_size, no_save, enabled FROM mailboxes"):
            r = base.add_mailbox(mid, did, size, no_save, enabled)
            base.add(f"{name}@{names.get(did, '')}".encode(), r, False)
            if mid in aliases or mid in copies:
                its = aliases.get(mid, ())
                base.extras[r] = (name, tuple(a for _, a in its), tuple(copies.get(mid, ())))
                for d, a in its:
                    base.add(f"{a}@{names.get(d, '')}".encode(), r, True)
        conn.execute("COMMIT")
    finally:
        conn.close()
    base.seal()
    by_name = {d.name: d for d in domains.values()}
    return base, by_name, int(generation[0]) if generation else 0, last


class DirectorySnapshot:
    """A Directory answered from memory (see the module doc). `generation()` and `version`
    say which directory generation it reflects, so a cache over it never keeps an answer
    older than the snapshot."""

    reads_synchronously = True  # lookups never wait: CachedDirectory.resolved() works
    in_memory = True  # CachedDirectory keeps resolutions only, not the lookups under them

    def __init__(self, path: str, store: Any = None) -> None:
        self.path = path
        self.store = store  # this process's Store: its writes are applied at once
        self._db = getattr(store, "db", None)  # its Db.version moves with each of its writes
        self._store_version = getattr(self._db, "version", None)
        self.base, self.domains, self._generation, self._last = _load(path)
        self._domain_ids = {d.id: d.name for d in self.domains.values()}
        self._overlay: dict[str, Found] = {}
        self._owned: dict[int, tuple[str, ...]] = {}  # mailbox id -> its overlay keys
        self._stale: set[int] = set()  # mailbox ids whose base entries are out of date
        self._conn = _connect(path)
        self._timer: asyncio.TimerHandle | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._closed = False
        self.users = 0  # services using it (for_store); each closes it once
        self.refreshes = 0
        self.rebuilds = 0

    @classmethod
    async def open(cls, path: str, store: Any = None) -> DirectorySnapshot:
        """Build it (in a thread: a million mailboxes take seconds) and start polling."""
        snap = await asyncio.to_thread(cls, path, store)
        snap.start()
        return snap

    @property
    def sending(self) -> Any:
        """The store's sender grants (the `senders` table asks them; they are not held here)."""
        return getattr(self.store, "sending", None)

    # ---------------------------------------------------------------- Directory
    async def get_domain(self, name: str) -> Domain | None:
        self._local_writes()
        found = self.domains.get(name)
        if found is None and self._caught_up():
            found = self.domains.get(name)
        return found

    async def find_mailbox(self, domain: str, local: str) -> Found | None:
        self._local_writes()
        found = self.lookup(domain, local)
        # `user+tag` not found: resolve() asks for `user` next, and that miss checks
        if found is None and split_extension(local)[1] is None and self._caught_up():
            found = self.lookup(domain, local)
        return found

    def _caught_up(self) -> bool:
        """Before saying "no such domain/mailbox": whether the directory generation moved
        since the last poll (one row read), and if so the changes are applied now. So an
        address provisioned a moment ago is never refused, as with SQL lookups; answers
        that find something may be up to POLL_INTERVAL old, as cached ones always were."""
        if self._rebuild is not None:
            return False
        row = self._conn.execute("SELECT generation FROM directory_generation").fetchone()
        if row is None or int(row[0]) == self._generation:
            return False
        self.refresh()
        return True

    def lookup(self, domain: str, local: str) -> Found | None:
        """find_mailbox() from memory only."""
        key = f"{local}@{domain}"
        if self._overlay:
            hit = self._overlay.get(key)
            if hit is not None:
                return hit
        base = self.base
        found = base.find(key.encode())
        if found is None:
            return None
        row, via_alias = found
        if self._stale and base.ids[row] in self._stale:
            return None
        d = self.domains.get(domain)
        if d is None or d.id != base.domain_ids[row]:  # the domain was deleted (and made anew)
            return None
        return base.mailbox(row, domain, local), via_alias

    def generation(self) -> int:
        """The directory generation this snapshot reflects."""
        return self._generation

    @property
    def version(self) -> int:
        self._local_writes()
        return self._generation

    # ---------------------------------------------------------------- keeping current
    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(POLL_INTERVAL, self._tick)

    def _tick(self) -> None:
        if self._closed:
            return
        try:
            self.refresh()
        except Exception as e:  # keep answering from what we have; try again next tick
            log.warning("directory_snapshot.refresh_failed", error=repr(e))
        self._timer = asyncio.get_running_loop().call_later(POLL_INTERVAL, self._tick)

    def _local_writes(self) -> None:
        """A write through this process's Store is seen by its next lookup (as with SQL)."""
        db = self._db
        if db is not None and db.version != self._store_version:
            self._store_version = db.version
            self.refresh()

    def refresh(self) -> None:
        """Apply what changed since the last look (on the calling thread)."""
        if self._rebuild is not None:
            return  # a rebuild will bring everything
        c = self._conn
        row = c.execute("SELECT generation FROM directory_generation").fetchone()
        if row is None or int(row[0]) == self._generation:
            return
        c.execute("BEGIN")
        try:
            generation = int(c.execute("SELECT generation FROM directory_generation")
                              .fetchone()[0])
            first = c.execute("SELECT min(id) FROM directory_changes").fetchone()[0]
            changes = c.execute("SELECT id, kind, ref FROM directory_changes WHERE id > ?"
                                " ORDER BY id LIMIT ?", (self._last, MAX_INCREMENTAL + 1)
                                ).fetchall()
            pruned = first is not None and first > self._last + 1 and changes
            if pruned or len(changes) > MAX_INCREMENTAL:
                self._start_rebuild()
                return
            self._apply(c, {r for _, k, r in changes if k == "d"},
                        {r for _, k, r in changes if k == "m"})
            if changes:
                self._last = changes[-1][0]
            self._generation = generation
            self.refreshes += 1
        finally:
            c.execute("COMMIT")
        if len(self._overlay) > MAX_OVERLAY:
            self._start_rebuild()

    def _apply(self, c: sqlite3.Connection, domain_ids: set[int], mailbox_ids: set[int]) -> None:
        c.row_factory = sqlite3.Row
        try:
            for did in domain_ids:
                old = self._domain_ids.pop(did, None)
                if old is not None:
                    self.domains.pop(old, None)
                r = c.execute("SELECT * FROM domains WHERE id = ?", (did,)).fetchone()
                if r is not None:
                    d = domain_from(r)
                    self.domains[d.name] = d
                    self._domain_ids[did] = d.name
            found: list[tuple[Mailbox, tuple[str, ...]]] = []
            for mid in mailbox_ids:
                for key in self._owned.pop(mid, ()):
                    self._overlay.pop(key, None)
                self._stale.add(mid)
                r = c.execute("SELECT m.*, d.name AS domain_name FROM mailboxes m"
                              " JOIN domains d ON d.id = m.domain_id WHERE m.id = ?",
                              (mid,)).fetchone()
                if r is None:
                    continue
                aliases = tuple(a[0] for a in c.execute(
                    "SELECT name FROM aliases WHERE mailbox_id = ? ORDER BY id", (mid,)))
                copies = tuple(a[0] for a in c.execute(
                    "SELECT address FROM copies WHERE mailbox_id = ? ORDER BY position", (mid,)))
                mb = Mailbox(id=mid, name=r["name"], domain=r["domain_name"], aliases=aliases,
                             max_size=r["max_size"], copies_to=copies, no_save=bool(r["no_save"]),
                             enabled=bool(r["enabled"]))
                found.append((mb, aliases))
        finally:
            c.row_factory = None
        for mb, aliases in found:  # removals first, then additions: a moved alias lands
            self._add(mb, aliases)

    def _add(self, mb: Mailbox, aliases: Iterable[str]) -> None:
        keys = []
        for a in aliases:
            key = f"{a}@{mb.domain}"
            if key not in self._overlay:
                self._overlay[key] = (mb, True)
                keys.append(key)
        key = f"{mb.name}@{mb.domain}"
        self._overlay[key] = (mb, False)  # a mailbox's name beats an alias
        keys.append(key)
        self._owned[mb.id] = tuple(keys)

    def _start_rebuild(self) -> None:
        if self._rebuild is None and not self._closed:
            self._rebuild = asyncio.get_running_loop().create_task(self._rebuild_base())

    async def _rebuild_base(self) -> None:
        t0 = time.monotonic()
        try:
            base, domains, generation, last = await asyncio.to_thread(_load, self.path)
        except Exception as e:
            log.warning("directory_snapshot.rebuild_failed", error=repr(e))
            self._rebuild = None
            return
        self.base, self.domains, self._generation, self._last = base, domains, generation, last
        self._domain_ids = {d.id: d.name for d in domains.values()}
        self._overlay, self._owned, self._stale = {}, {}, set()
        self._rebuild = None
        self.rebuilds += 1
        log.info("directory_snapshot.rebuilt", keys=base.n, seconds=round(time.monotonic() - t0, 2))
        self.refresh()  # what changed while it was read

    # ---------------------------------------------------------------- as a Listener
    def close(self) -> None:
        """Stop following the store once every user (see for_store) has closed it."""
        self.users = max(0, self.users - 1)
        if self.users > 0:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._rebuild is not None:
            self._rebuild.cancel()

    async def wait_closed(self) -> None:
        if not self._closed:
            return
        if self._rebuild is not None:
            await asyncio.gather(self._rebuild, return_exceptions=True)
        self._conn.close()


_SHARED: weakref.WeakKeyDictionary[Any, DirectorySnapshot] = weakref.WeakKeyDictionary()


async def for_store(store: Any) -> DirectorySnapshot | None:
    """The snapshot of `store`'s directory, one per Store (the services of one process share
    it; each closes it once, the last close stops it), started on first use; None where there
    is no change log to follow (not SQLite)."""
    snap = _SHARED.get(store)
    if snap is None or snap._closed:
        reader = getattr(store, "reader", None)
        engine = getattr(store, "engine", None)
        if reader is None or engine is None or not engine.url.database:
            return None
        snap = await DirectorySnapshot.open(engine.url.database, store)
        _SHARED[store] = snap
    snap.users += 1
    return snap
