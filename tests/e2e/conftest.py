"""Fixtures for the end-to-end suite: a private Postfix + Dovecot + mailpolicy on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from harness import INSTALL_HINT, Options, Stack, World, missing_binaries, with_remote_mx


def _require_system() -> None:
    """Fail loudly in CI, skip elsewhere, when Postfix/Dovecot cannot run here."""
    problems = missing_binaries()
    if os.geteuid() != 0:
        problems.append("root (a private Postfix instance must be started by root)")
    if not problems:
        return
    reason = f"end-to-end suite needs {', '.join(problems)}; {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def e2e_system() -> None:
    """Skip (or fail in CI) when the system packages are missing."""
    _require_system()


@pytest.fixture(scope="session")
def e2e_stack(e2e_system: None) -> Iterator[Stack]:
    """The shared stack (after-queue filter). Tests must use their own domains."""
    stack = Stack(Options()).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stack_factory(e2e_system: None) -> Iterator[Callable[..., Stack]]:
    """Start stacks with other options for one module: `stack_factory(filter_mode="before-queue")`;
    all are stopped at the end of the module."""
    started: list[Stack] = []

    def make(**options: object) -> Stack:
        stack = Stack(Options(**options)).start()  # type: ignore[arg-type]
        started.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(started):
            stack.stop()


@pytest.fixture(scope="module")
def world(stack_factory: Callable[..., Stack], request: pytest.FixtureRequest) -> Iterator[World]:
    """A stack whose Postfix routes the test module's `EXT` domain to a RemoteMX sink."""
    with with_remote_mx(stack_factory, request.module.EXT) as (stack, remote):
        yield World(stack, remote)
