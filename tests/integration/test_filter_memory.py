"""The filter's peak memory per in-flight message (issue #14 "Memory": at most 2x its size; it
was 6.6x). The filter runs alone in a child process (bench/filter_memory.py's), Postfix's
smtp-sink is the next hop; the child's peak RSS growth (VmHWM) is measured."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from filter_memory import CHILD, free_port, measure

SINK = "/usr/sbin/smtp-sink"
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.access(SINK, os.X_OK), reason="needs Postfix's smtp-sink")]


def test_one_large_message_costs_at_most_twice_its_size(tmp_path: Path) -> None:
    sink_port, filter_port = free_port(), free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SINK, *user, f"127.0.0.1:{sink_port}", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(filter_port),
                              str(sink_port)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for _ in range(100):  # log lines may come first
            if child.stdout.readline().strip() in ("ready", ""):
                break
        ratio = measure(child.pid, filter_port, 20, 1)  # one 20 MB message
        assert ratio < 2.0, f"peak RSS growth {ratio:.2f}x the message size"
    finally:
        child.terminate()
        sink.terminate()
        child.wait(10)
        sink.wait(10)
        shutil.rmtree(tmp_path / "mail", ignore_errors=True)
