"""The aiosmtpd private names mailpolicy/esmtp/adapter.py relies on still exist in the installed
aiosmtpd (a new release that drops one fails here, naming it), and the adapter's own
behaviour over a real socket."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailpolicy.esmtp import adapter

pytestmark = pytest.mark.timeout(30)
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _gone(name: str) -> str:
    return (f"aiosmtpd {importlib.metadata.version('aiosmtpd')} has no SMTP.{name} any more: "
            f"mailpolicy/esmtp/adapter.py overrides or uses it. Review the adapter against "
            f"this aiosmtpd release before widening the pin in pyproject.toml.")


@pytest.mark.parametrize("name", adapter.PRIVATE_METHODS)
def test_private_method_still_there(name: str) -> None:
    assert callable(getattr(SMTP, name, None)), _gone(name)
    assert callable(getattr(LMTP, name, None)), _gone(name)


async def test_private_attributes_still_set_on_a_session() -> None:
    sessions: list[adapter.ESMTPServer] = []

    def factory() -> adapter.ESMTPServer:
        s = adapter.ESMTPServer(object(), hostname="test.example")
        sessions.append(s)
        return s

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        for name in adapter.PRIVATE_ATTRIBUTES:
            assert hasattr(sessions[0], name), _gone(name)
        writer.write(b"NOOP\r\n")
        assert await reader.readline() == b"250 2.0.0 OK\r\n"  # enhanced code added
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_aiosmtpd_pinned_to_the_checked_minor_version() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("aiosmtpd"))
    m = re.fullmatch(r"aiosmtpd>=(\d+)\.(\d+)\.\d+,<(\d+)\.(\d+)", spec)
    assert m, f"pin aiosmtpd to the minor versions the adapter was checked on, not {spec!r}"
    low, high = (int(m[1]), int(m[2])), (int(m[3]), int(m[4]))
    assert high == (low[0], low[1] + 1), f"{spec!r} allows more than one minor version"
    installed = tuple(int(x) for x in importlib.metadata.version("aiosmtpd").split(".")[:2])
    assert low <= installed < high, f"installed aiosmtpd {installed} is outside {spec!r}"


async def test_session_dir_keeps_every_command_and_mechanism_aiosmtpd_looks_for() -> None:
    """ESMTPServer.__dir__ lists only `smtp_*` and `auth_*` (aiosmtpd searches dir() of each
    new session for them): nothing it looks for may be missing, for every session class."""
    from mailpolicy.lmtp.server import LMTPServer
    from mailpolicy.smtp.server import FilterSMTP

    loop = asyncio.get_running_loop()
    for cls in (adapter.ESMTPServer, FilterSMTP, LMTPServer):
        session = object.__new__(cls)
        wanted = {n for n in object.__dir__(session) if n.startswith(("smtp_", "auth_"))}
        assert set(dir(session)) == wanted, cls
        assert {"smtp_DATA", "smtp_MAIL", "smtp_RCPT"} <= wanted
    plain = adapter.ESMTPServer(object(), hostname="test.example", loop=loop)
    assert sorted(plain._smtp_methods) == sorted(
        n[5:] for n in object.__dir__(plain) if n.startswith("smtp_"))
