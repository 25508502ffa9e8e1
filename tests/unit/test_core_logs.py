"""The hot log line: written as structlog would, batched per event-loop turn, in order."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from mailpolicy import config
from mailpolicy.runtime import logs

KEYS = ("queue_id", "recipient", "action")
VALUES = ("8045F2AB23", "b@exämple.com", "550 5.1.1 it's \"gone\"")
TS = re.compile(r"timestamp='\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z'")


class Stream(io.StringIO):
    """A stderr that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


@pytest.fixture
def stream() -> Iterator[Stream]:
    """stderr for configure(), which must run in the test itself (pytest's own capture
    replaces sys.stderr once a test starts)."""
    yield Stream()
    logs._output.clear()
    structlog.reset_defaults()
    for handler in logs._handlers:
        logging.root.removeHandler(handler)
    logs._handlers.clear()


def configure(stream: Stream, json_lines: bool = False) -> tuple[logs.HotLine, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", stream)
        logs.setup(config.from_dict({"log": {"json": json_lines}}))
    logger = structlog.get_logger("test")
    return logs.HotLine(logger, "policy.decision", KEYS), logger


def test_same_line_as_structlog(stream: Stream) -> None:
    hot, logger = configure(stream)
    hot.info(*VALUES)  # no loop running: written at once
    logger.info("policy.decision", **dict(zip(KEYS, VALUES, strict=True)))
    mine, theirs = stream.getvalue().splitlines()
    assert TS.sub("", mine) == TS.sub("", theirs) and TS.search(mine)


def test_same_json_as_structlog(stream: Stream) -> None:
    hot, logger = configure(stream, json_lines=True)
    hot.info(*VALUES)
    logger.info("policy.decision", **dict(zip(KEYS, VALUES, strict=True)))
    mine, theirs = (json.loads(line) for line in stream.getvalue().splitlines())
    assert mine.pop("timestamp") and theirs.pop("timestamp")
    assert mine == theirs and list(mine) == list(theirs)


def test_lines_of_one_loop_turn_are_one_write(stream: Stream) -> None:
    hot, _ = configure(stream)

    async def main() -> None:
        for _ in range(3):
            hot.info(*VALUES)
        assert stream.writes == []
        await asyncio.sleep(0)
        assert len(stream.writes) == 1 and stream.getvalue().count("\n") == 3
        hot.info(*VALUES)
        await asyncio.sleep(0)
        assert len(stream.writes) == 2

    asyncio.run(main())


def test_other_lines_come_after_the_pending_ones(stream: Stream) -> None:
    hot, logger = configure(stream)

    async def main() -> None:
        hot.info(*VALUES)
        logger.warning("something")
        hot.info(*VALUES)

    asyncio.run(main())
    events = [line.split()[0] for line in stream.getvalue().splitlines()]
    assert events == ["event='policy.decision'", "event='something'", "event='policy.decision'"]


def test_stdlib_lines_come_after_the_pending_ones(stream: Stream) -> None:
    hot, _ = configure(stream)

    async def main() -> None:
        hot.info(*VALUES)
        logging.getLogger("some.library").warning("trouble")

    asyncio.run(main())
    second = TS.sub("", stream.getvalue().splitlines()[1])
    assert second == "event='trouble' logger='some.library' level='warning' "


def test_stdlib_lines_at_the_configured_level_come_through_rendered(stream: Stream) -> None:
    configure(stream)  # the default level: info
    logging.getLogger("some.library").info("decided %s", "this")
    logging.getLogger("some.library").debug("not this")
    logging.getLogger("mail.log").info("a line per SMTP command")  # quiet below warning
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("event='decided this' logger='some.library' level='info' timestamp=")


def _fail() -> None:
    password = "hunter2"  # a local: never in a log line
    raise LookupError(f"no such thing{'' if password else '?'}")


@pytest.mark.parametrize("source", ["structlog", "stdlib"])
def test_exceptions_are_written_with_type_and_traceback(stream: Stream, source: str) -> None:
    _, logger = configure(stream)
    try:
        _fail()
    except LookupError:
        if source == "structlog":
            logger.exception("thing.failed", key="k")
        else:
            logging.getLogger("some.library").exception("thing failed")
    (line,) = stream.getvalue().splitlines()  # one line: the traceback's newlines escaped
    assert "exception='Traceback (most recent call last):\\n" in line
    assert "in _fail\\n" in line and "LookupError: no such thing" in line
    assert "exc_info" not in line and "hunter2" not in line


@pytest.mark.parametrize("source", ["structlog", "stdlib"])
def test_json_exceptions_are_structured(stream: Stream, source: str) -> None:
    _, logger = configure(stream, json_lines=True)
    try:
        _fail()
    except LookupError as e:
        if source == "structlog":
            logger.error("thing.failed", exc_info=e)
        else:
            logging.getLogger("some.library").error("thing failed", exc_info=True)
    (line,) = stream.getvalue().splitlines()
    (exc,) = json.loads(line)["exception"]
    assert exc["exc_type"] == "LookupError" and exc["exc_value"] == "no such thing"
    assert exc["frames"][-1]["name"] == "_fail"
    assert "hunter2" not in line


def test_pieces_end_at_a_line_end_and_fit_a_pipe_write() -> None:
    lines = [f"line {i} {'x' * (i * 37 % 300)}\n" for i in range(200)]
    lines[50] = "y" * 5000 + "\n"  # longer than a pipe write: on its own
    lines[90] = "ü" * 1000 + "\n"  # 2 bytes a character
    for subset in (lines, [line for line in lines if line.isascii()]):
        text = "".join(subset)
        pieces = list(logs._pieces(text, subset, "utf-8"))
        assert "".join(pieces) == text
        for piece in pieces:
            assert piece.endswith("\n")
            assert len(piece.encode()) <= logs.PIPE_BUF or piece.count("\n") == 1
        assert any(len(piece.encode()) > logs.PIPE_BUF - 400 for piece in pieces)


def test_reconfigured_structlog_is_used(stream: Stream) -> None:
    hot, _ = configure(stream)
    seen: list[dict[str, object]] = []

    def keep(_logger: object, _name: str, event: dict[str, object]) -> str:
        seen.append(event)
        return "kept"

    structlog.configure(processors=[keep])
    hot.info(*VALUES)
    assert seen == [{"event": "policy.decision", **dict(zip(KEYS, VALUES, strict=True))}]


def test_timestamp_over_second_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = logs.FastTimestamp()
    for now, want in [(1700000000.999999, "2023-11-14T22:13:20.999999Z"),
                      (1700000001.25, "2023-11-14T22:13:21.250000Z"),
                      (1700000000.5, "2023-11-14T22:13:20.500000Z"),  # the clock stepped back
                      (1700000061.0, "2023-11-14T22:14:21.000000Z")]:
        monkeypatch.setattr(logs.time, "time", lambda now=now: now)
        assert stamp.now() == want
