"""Logging set-up: structlog over the stdlib, key=value (or JSON) lines on stderr."""

from __future__ import annotations

import logging
import sys

import structlog

from .config import Config


def setup(cfg: Config) -> None:
    """Configure structlog and the stdlib root logger from cfg.log."""
    level = getattr(logging, cfg.log.level.upper())
    renderer = (structlog.processors.JSONRenderer() if cfg.log.json
                else structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
