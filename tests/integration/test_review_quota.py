"""Review findings on Maildir++ quota accounting and clearing (each failed before its fix)."""

from __future__ import annotations

import itertools
import os

from mailpolicy.maildir import usage
from mailpolicy.maildir.clear import clear_contents
from mailpolicy.maildir.usage import MAILDIRSIZE, current_usage
from mailpolicy.maildir.writer import write_message


def test_clear_never_leaves_the_old_usage_when_a_delivery_races_the_rescan(tmp_path,
                                                                           monkeypatch):
    """clear_contents() resets `maildirsize` with a rescan that skips its write when a folder
    changed meanwhile (a delivery). The pre-clear totals must not survive that: they would
    refuse mail to an emptied mailbox (used + size > limit) until someone rescans."""
    for i in range(5):
        write_message(tmp_path, (b"x" * 180 + b"%d\n" % i,))
    assert current_usage(tmp_path, 1000)[1] == 5
    ticks = itertools.count()
    real = usage._mtimes
    # every rescan sees a folder change between its two looks (deliveries keep arriving)
    monkeypatch.setattr(usage, "_mtimes", lambda dirs: [*real(dirs), next(ticks)])
    clear_contents(tmp_path)
    monkeypatch.undo()
    assert current_usage(tmp_path, 1000) == (0, 0)
    text = (tmp_path / MAILDIRSIZE).read_text() if (tmp_path / MAILDIRSIZE).exists() else ""
    assert "905 5" not in text


def test_a_concurrent_clear_removing_our_holding_directory_is_not_an_error(tmp_path,
                                                                          monkeypatch):
    """Two clears of one mailbox (admin API and CLI): the second one's _leftovers() removes
    the first one's holding directory while it empties it. The first must still succeed."""
    from mailpolicy.maildir import clear as clear_mod

    for i in range(3):
        write_message(tmp_path, (b"m%d\n" % i,))
    real = clear_mod._remove_files

    def other_clear_ran(directory, names=None):
        if clear_mod.HOLD_MARK in directory.name and names is None:
            clear_mod._leftovers(directory.parent)  # what a concurrent clear_contents does
            assert not directory.exists()
        return real(directory, names)

    monkeypatch.setattr(clear_mod, "_remove_files", other_clear_ran)
    clear_contents(tmp_path)
    assert list((tmp_path / "new").iterdir()) == []
    assert not [n for n in os.listdir(tmp_path) if ".clear-" in n]
