"""Stale tmp/ files (older than 36 hours) are removed, a bounded batch of entries at a time."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mailpolicy.maildir.sweep import STALE_AFTER, TmpSweeper
from mailpolicy.maildir.writer import ensure_folder


def _file(path: Path, age: float, size: int = 10) -> Path:
    path.write_bytes(b"x" * size)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def _layout(root: Path) -> tuple[list[Path], list[Path]]:
    stale, kept = [], []
    for dom, name in (("a.test", "joe"), ("a.test", "ann"), ("b.test", "bob")):
        md = root / dom / name / "Maildir"
        ensure_folder(md)
        ensure_folder(md, ".Junk")
        stale.append(_file(md / "tmp" / "1.M1P1Q1.host,S=10", STALE_AFTER + 60))
        stale.append(_file(md / ".Junk" / "tmp" / "2.M1P1Q1.host,S=10", STALE_AFTER + 3600))
        stale.append(_file(md / "tmp" / "3.1Q1_NeWmAiLdIrSiZe.host", STALE_AFTER * 3, 0))
        kept.append(_file(md / "tmp" / "4.M1P1Q1.host,S=10", STALE_AFTER - 600))  # in flight
        kept.append(_file(md / "new" / "5.M1P1Q1.host,S=10", STALE_AFTER * 10))  # a message
        kept.append(_file(md / "cur" / "6.M1P1Q1.host,S=10:2,S", STALE_AFTER * 10))
    return stale, kept


def test_one_pass_removes_only_stale_tmp_files(tmp_path: Path) -> None:
    stale, kept = _layout(tmp_path)
    stats = TmpSweeper(tmp_path).sweep_all()
    assert (stats.removed, stats.freed, stats.passes_done) == (9, 60, 1)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_work_per_step_is_bounded_and_resumes(tmp_path: Path) -> None:
    stale, kept = _layout(tmp_path)
    sweeper = TmpSweeper(tmp_path, batch=4)
    steps = removed = 0
    while True:
        s = sweeper.step()
        steps += 1
        assert s.looked_at <= 4
        removed += s.removed
        if s.passes_done:
            break
        assert steps < 100
    assert steps > 5 and removed == 9
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    # the next pass starts again from the top and finds new garbage
    late = _file(tmp_path / "b.test" / "bob" / "Maildir" / "tmp" / "7.x", STALE_AFTER + 1)
    assert TmpSweeper(tmp_path).sweep_all().removed == 1 and not late.exists()


def test_a_missing_or_odd_root_is_harmless(tmp_path: Path) -> None:
    assert TmpSweeper(tmp_path / "nothing").sweep_all().removed == 0
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "d.test").mkdir()
    (tmp_path / "d.test" / "nomaildir").mkdir()
    assert TmpSweeper(tmp_path).sweep_all().removed == 0


def test_files_of_a_writer_that_is_gone_go_sooner(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mailpolicy.maildir.sweep import _host
    from mailpolicy.maildir.writer import unique_name

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # exited: its pid is free (reuse within the test is negligible)
    host = _host()
    md = tmp_path / "a.test" / "joe" / "Maildir"
    ensure_folder(md)
    tmp = md / "tmp"
    gone = _file(tmp / f"1700000000.M12P{pid}Q3.{host},S=10,W=11", 120)
    gone_size = _file(tmp / f"1700000000.{pid}Q1_NeWmAiLdIrSiZe.{host}", 120, 0)
    mine = _file(tmp / unique_name(10, 11), 120)  # this process: alive
    recent = _file(tmp / f"1700000001.M12P{pid}Q4.{host}", 5)  # too recent to judge
    other_host = _file(tmp / f"1700000000.M12P{pid}Q5.elsewhere.example", 120)
    odd = _file(tmp / "some-other-name", 120)
    stats = TmpSweeper(tmp_path).sweep_all()
    assert (stats.removed, stats.deferred) == (2, 1)
    assert not gone.exists() and not gone_size.exists()
    assert all(p.exists() for p in (mine, recent, other_host, odd))
