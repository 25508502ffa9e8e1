"""The rule every incremental parser of ours keeps: how the input is cut never matters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def assert_chunking_is_irrelevant(make_parser: Callable[[], Any], data: bytes,
                                  sizes: Sequence[int]) -> None:
    """Feeding `data` whole and cut at `sizes` (the rest last) gives the same results and
    the same error state."""
    whole_parser = make_parser()
    whole = whole_parser.feed(data)
    parser = make_parser()
    got: list[Any] = []
    pos = 0
    for n in sizes:
        got += parser.feed(data[pos:pos + n])
        pos += n
    got += parser.feed(data[pos:])
    assert got == whole
    assert (parser.error is None) == (whole_parser.error is None)
