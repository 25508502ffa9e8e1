"""Golden files in the repository, checked by tests and rewritten on request."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def write_on_request(expected: Callable[[], dict[Path, str]], repo: Path) -> None:
    """`python tests/unit/<test>.py --write`: rewrite the files the test checks."""
    if sys.argv[1:] == ["--write"]:
        for path, text in expected().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(repo)}")
