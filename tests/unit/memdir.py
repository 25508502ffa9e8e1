"""A Directory kept in dicts: resolve()'s contract without a database, for pure-logic tests."""

from __future__ import annotations

from mailpolicy.core.model import Domain, Mailbox


class MemoryDirectory:
    """Domains by name; mailboxes by (domain, name) and by (domain, alias). Counts lookups."""

    def __init__(self, domains: list[Domain], mailboxes: list[Mailbox]) -> None:
        self.domains = {d.name: d for d in domains}
        self.names: dict[tuple[str, str], tuple[Mailbox, bool]] = {}
        for m in mailboxes:
            for a in m.aliases:
                self.names[(m.domain, a)] = (m, True)
        for m in mailboxes:  # an exact name beats an alias
            self.names[(m.domain, m.name)] = (m, False)
        self.calls = 0

    async def get_domain(self, name: str) -> Domain | None:
        self.calls += 1
        return self.domains.get(name)

    async def find_mailbox(self, domain: str, local: str) -> tuple[Mailbox, bool] | None:
        self.calls += 1
        return self.names.get((domain, local))
