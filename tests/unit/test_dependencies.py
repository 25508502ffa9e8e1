"""Every third-party module mailpolicy imports comes from a distribution pyproject.toml declares
(not one that merely arrives with another, as idna did with aiohttp)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """The distributions of `dependencies` and of the `postgresql` extra (the store imports
    asyncpg only for a PostgreSQL URL)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [*project["dependencies"], *project["optional-dependencies"]["postgresql"]]
    return {_norm(re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0]) for d in deps}


def imported() -> dict[str, set[str]]:
    """Top-level third-party module name -> the mailpolicy files importing it."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "mailpolicy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("mailpolicy", "__future__"):
                    out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


def test_every_imported_distribution_is_declared() -> None:
    dists = md.packages_distributions()
    want = declared()
    missing = {}
    for module, files in imported().items():
        provided_by = {_norm(d) for d in dists.get(module, [])}
        if not provided_by & want:
            missing[module] = (sorted(provided_by), sorted(files))
    assert missing == {}, f"imported but not declared in pyproject dependencies: {missing}"
