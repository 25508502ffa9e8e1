"""The import graph follows the layering: protocol services import shared layers only, never
another service; each layer imports only the layers below it (see each package's docstring).

Run alone: `pytest tests/unit/test_layering.py` (reads the source, imports nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mailpolicy"

SERVICES = {"policy", "socketmap", "smtp", "lmtp", "admin"}
RUNTIME_LAYER = {"runtime.logs", "runtime.timers", "runtime.service", "runtime.sdnotify",
                 "runtime.sockets"}
# what each top-level part may import (besides itself); services: layers only
LAYERS: dict[str, set[str]] = {
    "config": set(),
    "core": {"config"},
    "store": {"config", "core"},
    "maildir": {"config", "core"},
    "auth": {"config", "core"},
    "deploy": {"config", "core"},
    "esmtp": {"config", "core"} | RUNTIME_LAYER,
    "autoreply": {"config", "core", "esmtp", "auth"} | RUNTIME_LAYER,  # auth: DKIM-signs replies
}
SERVICE_MAY = ({"config", "core", "store", "maildir", "auth", "deploy", "esmtp", "autoreply"}
               | RUNTIME_LAYER)


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every mailpolicy module `path` imports (relative imports resolved), at any depth."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mailpolicy")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.startswith("mailpolicy"):
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return found


def part(module: str) -> str:
    """`mailpolicy.runtime.logs.x` -> `runtime.logs` for runtime, else the top package."""
    bits = module.split(".")[1:]
    if not bits:
        return ""
    if bits[0] == "runtime" and len(bits) > 1:
        return f"runtime.{bits[1]}"
    return bits[0]


def allowed(src: str, dst: str) -> bool:
    top_src, top_dst = src.split(".")[0], dst.split(".")[0]
    if top_src == top_dst or dst == "":
        return True
    if top_src in SERVICES:
        return dst in SERVICE_MAY or (top_dst in {"store"} and top_src == "admin")
    if top_src in LAYERS:
        return dst in LAYERS[top_src] or top_dst in LAYERS[top_src]
    return True  # cli, services (the composition), runtime.daemon/workers: the top


def violations() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        src = part(module_name(path))
        for imp in sorted(imports(path)):
            dst = part(imp)
            if dst and not allowed(src, dst):
                out.append(f"{module_name(path)} imports {imp} ({src} may not import {dst})")
    return out


def test_services_import_only_shared_layers() -> None:
    assert violations() == []


def test_the_checker_sees_a_service_importing_another() -> None:
    assert not allowed("policy", "lmtp")
    assert not allowed("socketmap", "policy")
    assert not allowed("smtp", "runtime.daemon")
    assert not allowed("core", "store")
    assert allowed("policy", "maildir") and allowed("lmtp", "esmtp")
