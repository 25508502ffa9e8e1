"""Logging set-up: structlog over the stdlib, key=value (or JSON) lines on stderr."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import structlog

from .config import Config


class FastTimestamp:
    """`timestamp` in ISO 8601 UTC with microseconds; the date and time of day are formatted
    once a second (structlog's TimeStamper costs more than the rest of a log line)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event["timestamp"] = self.now()
        return event


class _Output:
    """What setup() configured, for HotLine: the processors (to notice a re-configuration),
    the level, the format, the timestamp and the stream."""

    def __init__(self, processors: list[Any], level: int, json_lines: bool,
                 timestamp: FastTimestamp, stream: TextIO) -> None:
        self.processors = processors
        self.level = level
        self.json = json_lines
        self.timestamp = timestamp
        self.stream = stream
        self._flush_due = False

    def flush_soon(self) -> None:
        """Flush at the end of this event-loop turn (one write for the lines of all the
        requests answered in it), or now when no loop runs."""
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.stream.flush()
            return
        self._flush_due = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self.stream.flush()


_output: list[_Output] = []  # the set-up made by setup() (at most one)


class HotLine:
    """One frequent log line of a fixed shape (the policy decision), written exactly as the
    structlog set-up of setup() would write it (same keys and order, level, timestamp,
    key=value or JSON), without the processor chain: a few µs instead of ~10; the lines of
    one event-loop turn are flushed together. Anything else (structlog configured another way,
    context variables bound) goes
    through structlog itself."""

    def __init__(self, logger: Any, event: str, keys: Sequence[str]) -> None:
        self.logger = logger
        self.event = event
        self.keys = tuple(keys)
        self._kv = (f"event={event!r} " + " ".join(f"{k}=%r" for k in self.keys)
                    + " level='info' timestamp=%r\n")

    def info(self, *values: str) -> None:
        out = _output[0] if _output else None
        if (out is None or structlog.contextvars._CONTEXT_VARS
                or structlog.get_config()["processors"] is not out.processors):
            self.logger.info(self.event, **dict(zip(self.keys, values, strict=True)))
            return
        if out.level > logging.INFO:
            return
        ts = out.timestamp.now()
        if out.json:
            event = dict(zip(self.keys, values, strict=True))
            event.update(event=self.event, level="info", timestamp=ts)
            line = json.dumps(event) + "\n"
        else:
            line = self._kv % (*values, ts)
        out.stream.write(line)
        out.flush_soon()


def setup(cfg: Config) -> None:
    """Configure structlog and the stdlib root logger from cfg.log."""
    level = getattr(logging, cfg.log.level.upper())
    renderer = (structlog.processors.JSONRenderer() if cfg.log.json
                else structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=False))
    timestamp = FastTimestamp()
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamp,
        renderer,
    ]
    _output[:] = [_Output(processors, level, cfg.log.json, timestamp, sys.stderr)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
