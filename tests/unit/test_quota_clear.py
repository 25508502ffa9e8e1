"""Clearing a mailbox: every folder emptied, folders kept, nothing delivered meanwhile lost."""

from __future__ import annotations

import os
import threading
import time

from mailpolicy.maildir import clear as clear_mod
from mailpolicy.maildir.clear import clear_contents
from mailpolicy.maildir.usage import MAILDIRSIZE, add_usage, current_usage, size_from_name
from mailpolicy.maildir.writer import JUNK, write_message


def files(md):
    return sorted(p for p in md.rglob("*") if p.is_file() and p.parent.name in ("new", "cur"))


def test_clear_empties_every_folder_and_keeps_them(tmp_path):
    for i in range(3):
        write_message(tmp_path, (b"m%d\n" % i,))
    write_message(tmp_path, (b"junk\n",), folder=JUNK)
    p = write_message(tmp_path, (b"seen\n",), folder=".Archive")
    os.rename(p, p.parent.parent / "cur" / (p.name + ":2,S"))
    (tmp_path / "tmp" / "in-progress").write_bytes(b"partial")
    current_usage(tmp_path, 1000)
    removed = clear_contents(tmp_path)
    assert removed[1] == 5
    assert files(tmp_path) == []
    for folder in (tmp_path, tmp_path / JUNK, tmp_path / ".Archive"):
        for sub in ("cur", "new", "tmp"):
            assert (folder / sub).is_dir()
    assert (tmp_path / JUNK / "maildirfolder").exists()
    assert (tmp_path / "tmp" / "in-progress").exists()  # deliveries in flight untouched
    assert (tmp_path / MAILDIRSIZE).read_text() == "1000S\n0 0\n"  # limits kept, usage reset
    assert not [n for n in os.listdir(tmp_path) if ".clear-" in n]


def test_clear_missing_maildir_is_a_no_op(tmp_path):
    assert clear_contents(tmp_path / "none") == (0, 0)


def test_message_delivered_during_the_clear_survives(tmp_path, monkeypatch):
    for i in range(10):
        write_message(tmp_path, (b"old %d\n" % i,))
    real = clear_mod._remove_files
    delivered = []

    def remove_while_delivering(directory, names=None):
        # the old new/ has been swapped out: a delivery now lands in the fresh new/
        delivered.append(write_message(tmp_path, (b"during the clear\n",)))
        return real(directory, names)

    monkeypatch.setattr(clear_mod, "_remove_files", remove_while_delivering)
    clear_contents(tmp_path)
    assert delivered and all(p.exists() for p in delivered)
    assert current_usage(tmp_path) == (sum(p.stat().st_size for p in delivered), len(delivered))


def test_concurrent_deliveries_are_either_cleared_or_kept(tmp_path):
    """Every message written is either counted as removed by a clear or still there, whole."""
    write_message(tmp_path, (b"first\n",))
    stop = time.monotonic() + 1.0
    written: list = []

    def deliver():
        n = 0
        while time.monotonic() < stop and n < 3000:
            p = write_message(tmp_path, (b"message %d\n" % n,))
            add_usage(tmp_path, size_from_name(p.name))
            written.append(p)
            n += 1

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for t in threads:
        t.start()
    removed = 0
    clears = 0
    while any(t.is_alive() for t in threads) and clears < 50:
        removed += clear_contents(tmp_path)[1]
        clears += 1
    for t in threads:
        t.join()
    remaining = files(tmp_path)
    assert removed + len(remaining) == len(written) + 1
    for p in remaining:
        assert p.read_bytes().startswith(b"message ")
    clear_contents(tmp_path)
    assert current_usage(tmp_path) == (0, 0)
