"""Review findings on the LMTP delivery path (each test failed before its fix)."""

from __future__ import annotations

import errno

from mailpolicy import config
from mailpolicy.core.model import Mailbox
from mailpolicy.lmtp import deliver
from mailpolicy.lmtp.deliver import Target, deliver_one, trace_headers
from mailpolicy.maildir.usage import current_usage
from mailpolicy.maildir.writer import maildir_for


def _cfg(tmp_path):
    return config.from_dict({"paths": {"state_dir": str(tmp_path),
                                       "maildir_root": str(tmp_path / "mail")}})


def test_usage_append_failure_after_the_durable_write_still_answers_250(tmp_path, monkeypatch):
    """The message is on disk once write_message returns: a failing `maildirsize` append
    (e.g. EDQUOT, the write just filled the filesystem quota) must not turn into 552 (a bounce
    of a delivered message) or 4xx (a duplicate on retry)."""
    cfg = _cfg(tmp_path)
    mb = Mailbox(name="alice", domain="example.test", id=1, max_size=10_000_000)
    md = maildir_for(cfg.maildir_root, mb.domain, mb.name)
    target = Target("alice@example.test", mb, md)
    assert deliver_one(cfg, target, "s@x.test", b"Subject: 1\n\none\n", False).ok

    def full(*_a, **_k):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(deliver, "add_usage", full)
    reply = deliver_one(cfg, target, "s@x.test", b"Subject: 2\n\ntwo\n", False)
    assert reply.ok, reply
    assert len(list((md / "new").iterdir())) == 2
    monkeypatch.undo()
    # the usage file no longer misses the second message's size
    used, count = current_usage(md, mb.max_size)
    assert count == 2
    assert used == sum(p.stat().st_size for p in (md / "new").iterdir())


def test_return_path_cannot_carry_a_line_break():
    """aiosmtpd accepts a bare CR (and quoted LF) in a path: it must not start a new header
    line in the stored message."""
    mb = Mailbox(name="alice", domain="example.test", id=1)
    head = trace_headers("a\rX-Evil: 1@x.test", mb)
    assert head.count(b"\n") == 2 and b"\r" not in head
    head = trace_headers("a\nX-Evil: 1@x.test", mb)
    assert head.count(b"\n") == 2
