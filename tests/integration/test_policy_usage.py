"""The policy service's quota usage reader over real Maildirs."""

import asyncio

from mailpolicy.core.model import Mailbox
from mailpolicy.maildir.reader import RESTAT_AFTER, UsageReader
from mailpolicy.maildir.writer import maildir_for


async def test_a_maildir_created_after_a_zero_answer_is_read_not_remembered_as_empty(tmp_path):
    mailbox = Mailbox("ann", "example.test", max_size=10_000)
    reader = UsageReader(tmp_path)
    assert await reader(mailbox) == 0  # no Maildir yet
    maildir = maildir_for(tmp_path, mailbox.domain, mailbox.name)
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.M1P1.host,S=4000").write_bytes(b"x" * 4000)  # no maildirsize yet
    await asyncio.sleep(RESTAT_AFTER + 0.05)
    assert await reader(mailbox) == 4000


async def test_usage_follows_maildirsize_changes(tmp_path):
    mailbox = Mailbox("bob", "example.test", max_size=10_000)
    maildir = maildir_for(tmp_path, mailbox.domain, mailbox.name)
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "maildirsize").write_text("10000S\n3000 1\n")
    reader = UsageReader(tmp_path)
    assert await reader(mailbox) == 3000
    size_file = maildir / "maildirsize"
    size_file.write_text(size_file.read_text() + "-1000 -1\n")  # e.g. Dovecot after an expunge
    await asyncio.sleep(RESTAT_AFTER + 0.05)
    assert await reader(mailbox) == 2000
