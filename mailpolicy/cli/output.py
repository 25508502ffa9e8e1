"""How the CLI prints: tables and key/value lists for people, JSON for scripts."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote


def quote_path(value: str) -> str:
    return quote(value, safe="@")


# ---------------------------------------------------------------- output
def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_pairs(items: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in items)
    for k, val in items:
        if isinstance(val, bool):
            val = "yes" if val else "no"
        elif isinstance(val, list):
            val = " ".join(val) or "-"
        elif val is None or val == "":
            val = "-"
        print(f"{k + ':':<{width + 1}} {val}")


def human_size(n: int) -> str:
    for unit, mult in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= mult:
            return f"{n / mult:.1f}{unit}"
    return str(n)


def usage_text(used: int, maximum: int | None) -> str:
    from mailpolicy.config import format_size

    return f"{human_size(used)}/{format_size(maximum)}"


def properties_text(p: dict[str, bool]) -> str:
    words = ["enabled" if p.get("enabled") else "disabled"]
    words += [w for k, w in (("forwards", "forwards"), ("no_save", "no-save"),
                             ("autoreply", "autoreply"), ("over_quota", "over-quota")) if p.get(k)]
    return ",".join(words)


# ---------------------------------------------------------------- confirmation
