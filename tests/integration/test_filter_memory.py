"""The filter's peak memory per in-flight message (issue #14 "Memory": at most 2x its size; it
was 6.6x). The filter runs alone in a child process (bench/filter_memory.py's), Postfix's
smtp-sink is the next hop; the child's peak RSS growth (VmHWM) is measured."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from filter_memory import filter_child, measure

SINK = "/usr/sbin/smtp-sink"
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.access(SINK, os.X_OK), reason="needs Postfix's smtp-sink")]


def test_one_large_message_costs_at_most_twice_its_size(tmp_path: Path) -> None:
    try:
        with filter_child(tmp_path, "20") as (pid, filter_port):
            ratio = measure(pid, filter_port, 20, 1)  # one 20 MB message
            assert ratio < 2.0, f"peak RSS growth {ratio:.2f}x the message size"
    finally:
        shutil.rmtree(tmp_path / "mail", ignore_errors=True)
