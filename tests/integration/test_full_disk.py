"""A full disk, for real (a 1 MB tmpfs): failed writes leave no partial files, reading usage
never depends on writing `maildirsize`, and the admin can list, clear and delete mailboxes to
free space."""

from __future__ import annotations

import errno
import os

import pytest
from fulldisk import fill, fill_inodes, leftovers, small_fs
from test_admin_support import admin_server

from mailpolicy.maildir.usage import MAILDIRSIZE, add_usage, current_usage, reset
from mailpolicy.maildir.writer import ensure_folder, write_message


def test_a_delivery_failing_on_enospc_leaves_no_partial_file() -> None:
    with small_fs() as root:
        maildir = root / "example.com" / "joe" / "Maildir"
        ensure_folder(maildir)
        for _ in range(5):
            with pytest.raises(OSError) as e:
                write_message(maildir, [b"Subject: big\n\n", b"x" * (2 * 1024 * 1024)])
            assert e.value.errno == errno.ENOSPC
        assert leftovers(root) == []
        assert os.listdir(maildir / "new") == []
        # the space is really free again: a message that fits is stored
        path = write_message(maildir, [b"Subject: small\n\n", b"y" * 1000])
        assert path.parent == maildir / "new"


def test_the_maildirsize_rescan_on_a_full_disk_answers_and_leaves_nothing() -> None:
    with small_fs() as root:
        maildir = root / "example.com" / "joe" / "Maildir"
        for _ in range(3):
            write_message(maildir, [b"Subject: m\n\n", b"z" * 1000])
        fill(root)
        (maildir / MAILDIRSIZE).unlink(missing_ok=True)
        assert current_usage(maildir, 10_000_000) == (3 * 1012, 3)
        assert current_usage(maildir) == (3 * 1012, 3)
        assert reset(maildir) == (3 * 1012, 3)
        assert leftovers(root) == []  # no empty *_NeWmAiLdIrSiZe
        assert not (maildir / MAILDIRSIZE).exists()


def test_a_delta_line_that_does_not_fit_whole_is_an_error() -> None:
    """A short append (the line's first bytes fit in the file's last page, the rest does not)
    must raise, so that the caller drops the file rather than leave half a line in it."""
    with small_fs() as root:
        maildir = root / "example.com" / "joe" / "Maildir"
        write_message(maildir, [b"Subject: m\n\n", b"z" * 1000])
        assert current_usage(maildir, 0) == (1012, 1)  # writes maildirsize
        size = (maildir / MAILDIRSIZE).stat().st_size
        pad = 4096 - 2 - size  # leave 2 bytes in the page for the 4-byte line "1 1\n"
        with open(maildir / MAILDIRSIZE, "ab") as f:
            f.write(b"0 " + b"0" * (pad - 3) + b"\n")
        fill(root)
        with pytest.raises(OSError):
            add_usage(maildir, 1, 1)


async def test_admin_lists_shows_clears_and_deletes_on_a_full_disk() -> None:
    with small_fs() as root:
        async with admin_server(paths={"maildir_root": str(root)}) as env:
            await env.ok("POST", "/v1/domains", {"name": "example.com"})
            for name in ("joe", "ann"):
                await env.ok("POST", "/v1/mailboxes", {"address": f"{name}@example.com",
                                                       "max_size": "10M"})
                env.deliver(f"{name}@example.com", 2000)
                env.deliver(f"{name}@example.com", 3000, sub="cur")
            fill(root)
            # every maildirsize must be recalculated (and cannot be written)
            for p in root.rglob(MAILDIRSIZE):
                p.unlink()
            status, res = await env.call("GET", "/v1/mailboxes")
            assert status == 200, res
            assert {b["address"]: b["usage"]["used"] for b in res["mailboxes"]} == {
                "joe@example.com": 5000, "ann@example.com": 5000}
            status, res = await env.call("GET", "/v1/mailboxes/joe@example.com")
            assert (status, res["usage"]["used"]) == (200, 5000), res
            status, res = await env.call("POST", "/v1/mailboxes/joe@example.com/clear?confirm=true")
            assert (status, res["freed"]) == (200, 5000), res
            fill(root)
            status, res = await env.call("DELETE", "/v1/mailboxes/ann@example.com?confirm=true")
            assert status < 300, res
            assert not (root / "example.com" / "ann").exists()
            assert leftovers(root) == []


async def test_clear_works_when_no_inode_is_left() -> None:
    """Clearing swaps new/ and cur/ with a fresh directory; without an inode for it, the files
    are removed one by one (as much space freed, nothing needed)."""
    with small_fs(size="4m", inodes=200) as root:
        async with admin_server(paths={"maildir_root": str(root)}) as env:
            await env.ok("POST", "/v1/domains", {"name": "example.com"})
            await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com"})
            for _ in range(3):
                env.deliver("joe@example.com", 1000)
                env.deliver("joe@example.com", 500, folder=".Sent", sub="cur")
            assert fill_inodes(root) > 0
            status, res = await env.call("GET", "/v1/mailboxes/joe@example.com")
            assert (status, res["usage"]["used"]) == (200, 4500), res
            status, res = await env.call("POST", "/v1/mailboxes/joe@example.com/clear?confirm=true")
            assert (status, res["freed"]) == (200, 4500), res
            maildir = env.maildir("joe@example.com")
            assert [p for p in maildir.rglob("*") if p.is_file() and p.parent.name in (
                "new", "cur")] == []
            assert leftovers(root) == []


async def test_lmtp_on_a_full_disk_defers_and_leaves_no_partial_files() -> None:
    """The probe's case: every failed delivery left its partial file in tmp/. Now each is
    a 4xx (Postfix retries), tmp/ stays empty, and once space is free delivery works."""
    import asyncio
    import smtplib

    from test_lmtp_server import make_env

    with small_fs(size="2m") as root:
        env, servers = await make_env(root / "state", paths={"maildir_root": str(root / "mail")},
                                      limits={"message_size_limit": "10M"})
        try:
            env.maildir("alice@example.test").mkdir(parents=True)
            filler = fill(root)
            big = b"Subject: big\r\n\r\n" + b"x" * 300_000 + b"\r\n.\r\n"

            def send(message: bytes) -> tuple[int, bytes]:
                c = env.track(smtplib.LMTP("127.0.0.1", env.port, timeout=30))
                assert c.docmd("LHLO", "client.test")[0] == 250
                assert c.docmd("MAIL FROM:<s@remote.test>")[0] == 250
                assert c.docmd("RCPT TO:<alice@example.test>")[0] == 250
                assert c.docmd("DATA")[0] == 354
                c.send(message)
                reply = c.getreply()
                c.quit()
                return reply

            for _ in range(5):
                code, text = await asyncio.to_thread(send, big)
                assert 400 <= code < 500, (code, text)
            assert leftovers(root) == []
            filler.unlink()
            code, _ = await asyncio.to_thread(send, big)
            assert code == 250
            assert len(env.messages("alice@example.test")) == 1
        finally:
            await env.close(servers)


async def test_with_the_store_on_the_full_disk_too_clear_frees_and_delete_says_what_to_do() -> None:
    """/var/lib and /var/vmail on one full filesystem: listing and clearing work; a deletion
    the store cannot write is a 507 that says how to free space, with nothing changed; after
    a clear, the deletion goes through."""
    with small_fs(size="4m") as root:
        async with admin_server(paths={"maildir_root": str(root / "mail"),
                                       "state_dir": str(root / "state")}) as env:
            await env.ok("POST", "/v1/domains", {"name": "example.com"})
            for name in ("joe", "ann"):
                await env.ok("POST", "/v1/mailboxes", {"address": f"{name}@example.com"})
                env.deliver(f"{name}@example.com", 200_000)
            fill(root)
            status, res = await env.call("GET", "/v1/mailboxes")
            assert status == 200 and len(res["mailboxes"]) == 2
            fill(root)
            before = await env.snapshot()
            status, res = await env.call("DELETE", "/v1/mailboxes/ann@example.com?confirm=true")
            assert (status, res["error"]) == (507, "disk_full"), res
            assert "mailbox clear" in res["message"]
            assert await env.snapshot() == before
            status, res = await env.call("POST", "/v1/mailboxes/ann@example.com/clear?confirm=true")
            assert (status, res["freed"]) == (200, 200_000), res
            status, res = await env.call("DELETE", "/v1/mailboxes/ann@example.com?confirm=true")
            assert status == 200, res
            assert [m.address for m in await env.store.list_mailboxes()] == ["joe@example.com"]
