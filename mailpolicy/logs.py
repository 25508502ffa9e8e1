"""Logging set-up: structlog over the stdlib, key=value (or JSON) lines on stderr."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

from .config import Config


class FastTimestamp:
    """`timestamp` in ISO 8601 UTC with microseconds; the date and time of day are formatted
    once a second (structlog's TimeStamper costs more than the rest of a log line)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


def setup(cfg: Config) -> None:
    """Configure structlog and the stdlib root logger from cfg.log."""
    level = getattr(logging, cfg.log.level.upper())
    renderer = (structlog.processors.JSONRenderer() if cfg.log.json
                else structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            FastTimestamp(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
