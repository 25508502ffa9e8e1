"""Idle timers for long-lived protocol connections (policy, socketmap)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleTimer:
    """Closes a connection after `timeout` to 2×`timeout` seconds without input: one timer per
    connection, checking every `timeout` whether touch() was called since it last looked (a
    flag per read instead of a clock reading or a timeout around every read)."""

    def __init__(self, timeout: float, on_idle: Callable[[], object]) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.on_idle = on_idle
        self.fired = False
        self.active = False
        self._handle = self.loop.call_later(timeout, self._check)

    def touch(self) -> None:
        self.active = True

    def _check(self) -> None:
        if self.active:
            self.active = False
            self._handle = self.loop.call_later(self.timeout, self._check)
        else:
            self.fired = True
            self.on_idle()

    def cancel(self) -> None:
        self._handle.cancel()
