"""A DKIM key as the directory knows it (selector, algorithm, public key, key file, when it
signs and until when it is published), and which keys sign at a given time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One selector of a domain. `active_from`: signs from then on (the newest active key of
    each algorithm signs); `retire_at`: unpublished and unused from then on (None: never)."""

    domain: str
    selector: str
    algorithm: str
    public_key: str  # the DNS p= value
    key_file: str
    created_at: float
    active_from: float
    retire_at: float | None = None

    def published(self, now: float) -> bool:
        return self.retire_at is None or self.retire_at > now

    def signs(self, now: float) -> bool:
        return self.active_from <= now and self.published(now)


def current(keys: list[DkimKey], now: float) -> list[DkimKey]:
    """The keys that sign at `now`: per algorithm the newest active one, RSA first."""
    best: dict[str, DkimKey] = {}
    for k in keys:
        if k.signs(now) and (k.algorithm not in best
                             or k.active_from >= best[k.algorithm].active_from):
            best[k.algorithm] = k
    return [best[a] for a in sorted(best, key=lambda a: (a != "rsa", a))]
