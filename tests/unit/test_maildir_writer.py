"""Maildir paths (no path tricks) and the durable Maildir++ writer."""

from __future__ import annotations

import os
import re
import stat
import threading

import pytest

from mailpolicy.maildir.usage import size_from_name
from mailpolicy.maildir.writer import (
    JUNK,
    MaildirPathError,
    ensure_folder,
    folder_path,
    maildir_for,
    write_message,
)


def test_maildir_for_layout(tmp_path):
    assert maildir_for(tmp_path, "example.test", "alice") == (
        tmp_path / "example.test" / "alice" / "Maildir")


@pytest.mark.parametrize("domain,name", [
    ("example.test", ".."), ("example.test", "../x"), ("example.test", "a/b"),
    ("example.test", "a\x00b"), ("example.test", "Alice"), ("example.test", ".hidden"),
    ("..", "alice"), ("../etc", "alice"), ("Example.TEST", "alice"), ("a/b.test", "x"),
    ("example.test", ""), ("", "alice"), ("example.test", "a..b"),
])
def test_maildir_for_refuses_path_tricks(tmp_path, domain, name):
    with pytest.raises(MaildirPathError):
        maildir_for(tmp_path, domain, name)


@pytest.mark.parametrize("folder", ["..", ".", "../x", ".a/b", "Junk", "..Junk"])
def test_folder_names_refused(tmp_path, folder):
    with pytest.raises(MaildirPathError):
        folder_path(tmp_path, folder)


def test_write_creates_maildir_with_safe_modes(tmp_path):
    md = tmp_path / "d.test" / "u" / "Maildir"
    path = write_message(md, (b"Return-Path: <>\n", b"Subject: x\n\nbody\n"))
    assert path.parent == md / "new"
    assert path.read_bytes() == b"Return-Path: <>\nSubject: x\n\nbody\n"
    for sub in ("cur", "new", "tmp"):
        assert stat.S_IMODE(os.stat(md / sub).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(md / "tmp") == []


def test_name_carries_size_and_virtual_size(tmp_path):
    body = b"a\nbb\nccc\n"
    path = write_message(tmp_path, (b"H: 1\n", body))
    size = len(b"H: 1\n") + len(body)
    assert size_from_name(path.name) == size
    assert re.search(rf",S={size},W={size + 4}$", path.name)
    assert re.match(r"^\d+\.M\d+P\d+Q\d+\.", path.name)


def test_names_are_unique_across_threads(tmp_path):
    ensure_folder(tmp_path)
    paths: list = []

    def work():
        for _ in range(50):
            paths.append(write_message(tmp_path, (b"x\n",)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 200 == len(os.listdir(tmp_path / "new"))


def test_junk_folder_is_maildirplusplus(tmp_path):
    path = write_message(tmp_path, (b"x\n",), folder=JUNK)
    assert path.parent == tmp_path / ".Junk" / "new"
    assert (tmp_path / ".Junk" / "maildirfolder").exists()
    for sub in ("cur", "new", "tmp"):
        assert (tmp_path / sub).is_dir()


def test_new_dir_vanishing_is_recreated(tmp_path):
    ensure_folder(tmp_path)
    os.rmdir(tmp_path / "new")
    path = write_message(tmp_path, (b"x\n",))
    assert path.exists()


def test_large_parts_written_completely(tmp_path):
    big = os.urandom(3 * 1024 * 1024).replace(b"\r", b"")
    path = write_message(tmp_path, (b"H: v\n", big))
    assert path.read_bytes() == b"H: v\n" + big


def test_a_rescan_racing_a_delivery_never_counts_the_message_twice(tmp_path):
    """A rescan (maildirsize missing) that runs between a delivery's rename into new/ and its
    maildirsize append would count the message and then see its delta added again: the
    Maildir's counting lock keeps the two apart (seen under load in the e2e quota test)."""
    import threading
    import time as _time

    from mailpolicy.maildir.usage import add_usage, current_usage
    from mailpolicy.maildir.writer import ensure_folder, write_message

    maildir = tmp_path / "Maildir"
    ensure_folder(maildir)
    in_window = threading.Event()

    def slow_count() -> None:
        in_window.set()
        _time.sleep(0.3)  # the window between the rename and the append
        add_usage(maildir, 100, 1)

    delivery = threading.Thread(target=write_message,
                                args=(maildir, [b"x" * 99 + b"\n"], "", slow_count))
    delivery.start()
    assert in_window.wait(5)
    rescan = threading.Thread(target=current_usage, args=(maildir, 10_000))
    rescan.start()
    delivery.join(5)
    rescan.join(5)
    assert current_usage(maildir, 10_000) == (100, 1)
