"""Logging set-up: structlog and the stdlib's records through one renderer, key=value (or JSON)
lines on stderr, exceptions with their traceback."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
from asyncio.events import _get_running_loop
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import structlog
import structlog.tracebacks
from structlog._config import _CONFIG, BoundLoggerLazyProxy
from structlog.contextvars import _CONTEXT_VARS
from structlog.typing import EventDict, Processor

from mailpolicy.config import Config

PIPE_BUF = 4096  # bytes that one write(2) puts into a pipe in one piece (Linux)


class FastTimestamp:
    """`timestamp` in ISO 8601 UTC with microseconds; the date and time of day are formatted
    once a second (structlog's TimeStamper costs more than the rest of a log line)."""

    def __init__(self) -> None:
        self._second = -1  # the second self._format is for
        self._next = 0.0  # the second after it
        self._format = ""  # "<date>T<time>.%06dZ"

    def now(self) -> str:
        now = time.time()
        if now >= self._next or now < self._second:
            self._second = second = int(now)
            self._next = second + 1
            self._format = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + ".%06dZ"
        return self._format % ((now - self._second) * 1e6)  # %d truncates, like int()

    def __call__(self, _logger: Any, _name: str, event: EventDict) -> EventDict:
        event["timestamp"] = self.now()
        return event


class _Output:
    """What setup() configured, for HotLine: the processors (to notice a re-configuration),
    the level, the format, the timestamp and the stream; and the hot lines not written yet."""

    def __init__(self, level: int, json_lines: bool, timestamp: FastTimestamp,
                 stream: TextIO) -> None:
        self.processors: list[Any] = []
        self.level = level
        self.json = json_lines
        self.timestamp = timestamp
        self.stream = stream
        self.pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # where flush() is due

    def write(self, line: str) -> None:
        """Write `line` at the end of this event-loop turn, with the other lines of the turn
        (stderr is line-buffered: one write(2) per line otherwise); now when no loop runs."""
        self.pending.append(line)
        if self._loop is not None and not self._loop.is_closed():
            return  # a flush is due in this turn already (no loop lookup: 3.11 does getpid())
        loop = _get_running_loop()
        if loop is None:
            self.flush()
        else:
            self._loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the pending lines now: in pieces of at most PIPE_BUF bytes that end at a line
        end, one write(2) each, so the lines of the processes sharing a stderr pipe never
        interleave."""
        self._loop = None
        lines, self.pending = self.pending, []
        if not lines:
            return
        stream = self.stream
        text = "".join(lines)
        if len(text) <= PIPE_BUF and text.isascii():
            stream.write(text)  # the usual case: one piece
            stream.flush()
            return
        for piece in _pieces(text, lines, getattr(stream, "encoding", None) or "utf-8"):
            stream.write(piece)
            stream.flush()

    def flush_before_other_lines(self) -> None:
        """Write the pending lines before another log line is, when that line comes from the
        thread of their event loop (a thread of its own comes whenever it comes)."""
        if self.pending and _get_running_loop() is self._loop:
            self.flush()

    def before_structlog(self, _logger: Any, _name: str, event: dict[str, Any],
                         ) -> dict[str, Any]:
        """The first processor: the pending hot lines go out before any other line."""
        self.flush_before_other_lines()
        return event


def _pieces(text: str, lines: list[str], encoding: str) -> Iterator[str]:
    """`text`, the lines joined, in pieces of at most PIPE_BUF bytes once encoded, each ending
    at a line end (a longer line is a piece of its own)."""
    if text.isascii():  # a character is a byte: cut the text itself
        start = 0
        while len(text) - start > PIPE_BUF:
            end = text.rfind("\n", start, start + PIPE_BUF) + 1
            if end <= start:  # a line longer than PIPE_BUF
                end = text.find("\n", start) + 1 or len(text)
            yield text[start:end]
            start = end
        yield text[start:]
        return
    piece: list[str] = []
    size = 0
    for line in lines:
        n = len(line) if line.isascii() else len(line.encode(encoding, "backslashreplace"))
        if piece and size + n > PIPE_BUF:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += n
    if piece:
        yield "".join(piece)


_output: list[_Output] = []  # the set-up made by setup() (at most one)


def _flush_pending() -> None:
    """Write the pending hot lines (at exit, or before a new set-up)."""
    if _output:
        _output[0].flush()


def _before_stdlib_line(_record: logging.LogRecord) -> bool:
    """A filter on the stdlib's stderr handler: the pending hot lines go out before its line."""
    if _output:
        _output[0].flush_before_other_lines()
    return True


atexit.register(_flush_pending)


class HotLine:
    """One frequent log line of a fixed shape (the policy decision), written exactly as the
    structlog set-up of setup() would write it (same keys and order, level, timestamp,
    key=value or JSON), without the processor chain: a few µs instead of ~10; the lines of
    one event-loop turn are written together at its end (other log lines of the set-up flush
    them first, so the order is kept). Anything else (structlog configured another way,
    context variables ever bound) goes through structlog itself."""

    def __init__(self, logger: Any, event: str, keys: Sequence[str]) -> None:
        self.logger = logger
        self.event = event
        self.keys = tuple(keys)
        self._kv = (f"event={event!r} " + " ".join(f"{k}=%r" for k in self.keys)
                    + " level='info' timestamp=%r\n")

    def info(self, *values: str) -> None:
        out = _output[0] if _output else None
        if out is None or _CONTEXT_VARS or _CONFIG.default_processors is not out.processors:
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
        out.write(line)


# Third-party loggers that say too much at info: a line per SMTP command (aiosmtpd), per
# migration check (Alembic). Below debug only their warnings and errors come through.
CHATTY_LOGGERS = ("mail.log", "alembic")


def _exception_renderer(json_lines: bool) -> Processor:
    """How an `exc_info` becomes text in a line: the type, message and frames as a structured
    `exception` list for JSON (structlog's dict_tracebacks, but never the frames' local
    variables: passwords, message content), the formatted traceback as one `exception=...`
    value for key=value (its newlines escaped, so it stays one line)."""
    if json_lines:
        return structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
    return structlog.processors.format_exc_info


_handlers: list[logging.Handler] = []  # the stdlib handler setup() installed (at most one)


def _forget_cached_loggers() -> None:
    """The module-level loggers (`log = structlog.get_logger(...)`) keep the logger they
    assembled on first use (cache_logger_on_first_use): after a new set-up (a reload changing
    the level) they must assemble it again."""
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("mailpolicy"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, BoundLoggerLazyProxy) and "bind" in vars(value):
                del value.bind


def setup(cfg: Config) -> None:
    """Configure structlog and the stdlib root logger from cfg.log: both render through the
    same processors (level, timestamp, exception with its traceback, key=value or JSON), at
    cfg.log.level, on stderr."""
    level = logging.getLevelNamesMapping()[cfg.log.level.upper()]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if cfg.log.json
        else structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=False))
    exception = _exception_renderer(cfg.log.json)
    timestamp = FastTimestamp()
    _flush_pending()  # the lines of a previous set-up
    out = _Output(level, cfg.log.json, timestamp, sys.stderr)
    out.processors = [
        out.before_structlog,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamp,
        exception,
        renderer,
    ]
    _output[:] = [out]
    structlog.configure(
        processors=out.processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # the stdlib's records (libraries, asyncio's "exception was never retrieved") become the
    # same lines: event = the message, plus the logger's name
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name,
                           structlog.processors.add_log_level, timestamp, exception],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    handler.addFilter(_before_stdlib_line)  # stdlib lines too come after the pending ones
    root = logging.getLogger()
    for old in _handlers:
        root.removeHandler(old)
    _handlers[:] = [handler]
    root.addHandler(handler)
    root.setLevel(level)
    _forget_cached_loggers()  # a reload may change the level
    for name in CHATTY_LOGGERS:  # all of it at debug
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG
                                         else max(level, logging.WARNING))


def unexpected(error: BaseException) -> BaseException | None:
    """`exc_info=unexpected(e)` in a log call: the exception (so its type and traceback are
    written) unless it is an expected I/O failure, a timeout or an OSError, whose message
    says all."""
    return None if isinstance(error, TimeoutError | OSError) else error
