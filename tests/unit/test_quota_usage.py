"""Maildir++ `maildirsize`: read, append and rescan exactly as Courier and Dovecot do."""

from __future__ import annotations

import os
import time

from mailpolicy.maildir.usage import (
    MAILDIRSIZE,
    Limits,
    add_usage,
    current_usage,
    parse_limits,
    rescan,
    size_from_name,
)
from mailpolicy.maildir.writer import JUNK, ensure_folder, write_message


def put(maildir, folder, sub, name, size):
    d = maildir / folder / sub if folder else maildir / sub
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b"x" * size)


def test_limits_header_format_like_dovecot():
    assert Limits(0, 0).header() == "0S"
    assert Limits(1000, 0).header() == "1000S"
    assert Limits(0, 5).header() == "5C"
    assert Limits(1000, 5).header() == "1000S,5C"


def test_parse_limits():
    assert parse_limits("10000000S,1000C") == Limits(10000000, 1000)
    assert parse_limits("0S") == Limits(0, 0)
    assert parse_limits("1000X") is None
    assert parse_limits("") is None
    assert parse_limits("S") is None


def test_size_from_name_rules():
    assert size_from_name("123.M1P2.host,S=1234") == 1234
    assert size_from_name("123.M1P2.host,S=1234,W=1300:2,S") == 1234
    assert size_from_name("123.M1P2.host,S=1234:2,") == 1234
    assert size_from_name("123.M1P2.host,S=12x4") is None
    assert size_from_name("123.M1P2.host,S=") is None
    assert size_from_name("123.M1P2.host") is None


def test_rescan_counts_new_and_cur_of_every_folder_not_tmp(tmp_path):
    put(tmp_path, "", "new", "1.a,S=100", 1)
    put(tmp_path, "", "cur", "2.a,S=200:2,S", 1)
    put(tmp_path, "", "cur", "3.nosize", 50)  # no ,S=: stat size
    put(tmp_path, JUNK, "new", "4.a,S=1000", 1)
    put(tmp_path, ".Sent.2026", "cur", "5.a,S=7:2,", 1)
    put(tmp_path, "", "tmp", "6.a,S=99999", 1)  # in progress, not counted
    put(tmp_path, "", "new", "..skipped,S=5", 1)  # Dovecot skips names starting with ".."
    assert current_usage(tmp_path, 0) == (100 + 200 + 50 + 1000 + 7, 5)
    text = (tmp_path / MAILDIRSIZE).read_text()
    assert text == "0S\n1357 5\n"


def test_missing_maildir_uses_nothing_and_creates_nothing(tmp_path):
    md = tmp_path / "nope" / "Maildir"
    assert current_usage(md, 1000) == (0, 0)
    assert not md.exists()


def test_append_then_read_sums_lines(tmp_path):
    ensure_folder(tmp_path)
    assert current_usage(tmp_path, 10_000) == (0, 0)
    add_usage(tmp_path, 300)
    assert (tmp_path / MAILDIRSIZE).read_text() == "10000S\n0 0\n300 1\n"
    assert current_usage(tmp_path, 10_000) == (300, 1)  # read, no rescan: file is trusted
    add_usage(tmp_path, -300, -1)
    assert current_usage(tmp_path, 10_000) == (0, 0)


def test_add_usage_never_creates_the_file(tmp_path):
    add_usage(tmp_path, 5)
    assert not (tmp_path / MAILDIRSIZE).exists()


def test_limit_change_rewrites_header(tmp_path):
    ensure_folder(tmp_path)
    put(tmp_path, "", "new", "1.a,S=10", 1)
    current_usage(tmp_path, 100)
    assert (tmp_path / MAILDIRSIZE).read_text().startswith("100S\n")
    current_usage(tmp_path, 200)
    assert (tmp_path / MAILDIRSIZE).read_text() == "200S\n10 1\n"
    current_usage(tmp_path, None)  # None keeps the file's limits
    assert (tmp_path / MAILDIRSIZE).read_text() == "200S\n10 1\n"


def test_file_of_5120_bytes_or_more_is_recalculated(tmp_path):
    ensure_folder(tmp_path)
    put(tmp_path, "", "new", "1.a,S=10", 1)
    lines = "0S\n" + "1 0\n" * 2000
    (tmp_path / MAILDIRSIZE).write_text(lines)
    assert current_usage(tmp_path, 0) == (10, 1)
    assert (tmp_path / MAILDIRSIZE).read_text() == "0S\n10 1\n"


def test_broken_or_negative_file_is_recalculated(tmp_path):
    ensure_folder(tmp_path)
    put(tmp_path, "", "cur", "1.a,S=10:2,", 1)
    for bad in ("0S\n-50 -1\n", "0S\nfoo bar\n", "garbage\n1 1\n", "", "0S\n1 1 1\n",
                "0S\n\x00\n"):
        (tmp_path / MAILDIRSIZE).write_text(bad)
        assert current_usage(tmp_path, 0) == (10, 1), bad


def test_unterminated_last_line_is_ignored(tmp_path):
    ensure_folder(tmp_path)
    (tmp_path / MAILDIRSIZE).write_text("1000S\n10 1\n99")
    assert current_usage(tmp_path, 1000) == (10, 1)


def test_over_quota_with_several_deltas_is_not_trusted(tmp_path):
    ensure_folder(tmp_path)
    put(tmp_path, "", "new", "1.a,S=10", 1)
    (tmp_path / MAILDIRSIZE).write_text("100S\n60 1\n60 1\n")
    assert current_usage(tmp_path, 100) == (10, 1)


def test_over_quota_single_line_trusted_unless_older_than_15_minutes(tmp_path):
    ensure_folder(tmp_path)
    put(tmp_path, "", "new", "1.a,S=10", 1)
    f = tmp_path / MAILDIRSIZE
    f.write_text("100S\n500 3\n")
    assert current_usage(tmp_path, 100) == (500, 3)
    old = time.time() - 16 * 60
    os.utime(f, (old, old))
    assert current_usage(tmp_path, 100) == (10, 1)


def test_rescan_does_not_write_when_a_folder_changes_meanwhile(tmp_path, monkeypatch):
    ensure_folder(tmp_path)
    import mailpolicy.maildir.usage as usage

    real = usage.sum_dir

    def sum_and_deliver(d):
        result = real(d)
        if d == tmp_path / "new":  # another program (e.g. Dovecot) adds a message meanwhile
            time.sleep(0.01)
            (tmp_path / "new" / "1.M1P1.host,S=5").write_bytes(b"late\n")
        return result

    monkeypatch.setattr(usage, "sum_dir", sum_and_deliver)
    assert rescan(tmp_path, Limits()) == (0, 0)
    assert not (tmp_path / MAILDIRSIZE).exists()


def test_matches_what_delivery_writes(tmp_path):
    sizes = []
    for i in range(5):
        p = write_message(tmp_path, (b"H: %d\n" % i, b"x" * (100 * i) + b"\n"))
        sizes.append(p.stat().st_size)
        add_usage(tmp_path, sizes[-1])
    write_message(tmp_path, (b"j\n",), folder=JUNK)
    assert current_usage(tmp_path, 0) == (sum(sizes) + 2, 6)
