"""What a reload (SIGHUP) may apply in place and what needs a restart: a pure plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from mailpolicy import config as config_mod

# keys (or whole sections, ending with ".") that only a restart applies: addresses and paths
# that are bound or opened once, and what sizes the process pools
RESTART_ONLY: tuple[str, ...] = (
    "listen.", "paths.", "store.", "admin.", "outbound.",
    "limits.lmtp_workers", "limits.policy_workers", "dmarc.verify_processes", "filter.mode",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """`effective`: the new config with every restart-only key kept at its running value;
    `applied`/`needs_restart`: the changed keys (dotted names) of each kind."""

    effective: config_mod.Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def _restart_only(key: str) -> bool:
    return any(key.startswith(r) if r.endswith(".") else key == r for r in RESTART_ONLY)


def _put(tree: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    for p in path:
        tree = tree[p]
    tree[last] = value


def plan(running: config_mod.Config, new: config_mod.Config) -> Plan:
    """Compare the running config with a newly loaded one (base_dir: the running one's)."""
    old_tree = msgspec.to_builtins(running, enc_hook=int)
    new_tree = msgspec.to_builtins(new, enc_hook=int)
    old_tree.pop("base_dir", None)
    new_tree.pop("base_dir", None)
    old_flat, new_flat = _flat(old_tree), _flat(new_tree)
    applied, restart = [], []
    for key in sorted(old_flat.keys() | new_flat.keys()):
        if old_flat.get(key) == new_flat.get(key):
            continue
        if _restart_only(key):
            restart.append(key)
            _put(new_tree, key, old_flat[key])
        else:
            applied.append(key)
    effective = config_mod.from_dict(new_tree, base_dir=running.base_dir) if (
        applied or restart) else running
    return Plan(effective, tuple(applied), tuple(restart))
