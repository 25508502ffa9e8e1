"""Every bad `max_size` is a 422 naming the field, never a 500 from the store (SQLite's
integers are 64-bit), and nothing changes."""

from __future__ import annotations

import pytest
from test_admin_support import admin_server

from mailpolicy.config import SIZE_MAX, parse_size

BAD = [2**63, 2**64, 10**30, "99999999999999999999T", "9223372036854775808",
       "8589934592T", -1, "-5M", 1.5, "1.5G", "lots", "", True, [], {}]


@pytest.mark.parametrize("value", BAD, ids=repr)
async def test_bad_max_size_is_422_naming_the_field(value: object) -> None:
    async with admin_server() as env:
        await env.ok("POST", "/v1/domains", {"name": "example.com"})
        await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com", "max_size": "1G"})
        before = await env.snapshot()
        if value == "":  # "" means unlimited on edit: only the create refuses nothing here
            return
        status, res = await env.call("POST", "/v1/mailboxes",
                                     {"address": "ann@example.com", "max_size": value})
        assert (status, res["field"]) == (422, "max_size"), res
        status, res = await env.call("PATCH", "/v1/mailboxes/joe@example.com",
                                     {"max_size": value})
        assert (status, res["field"]) == (422, "max_size"), res
        assert await env.snapshot() == before


async def test_the_largest_size_is_stored_and_read_back() -> None:
    async with admin_server() as env:
        await env.ok("POST", "/v1/domains", {"name": "example.com"})
        m = await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com",
                                                   "max_size": SIZE_MAX})
        assert m["max_size"] == SIZE_MAX
        assert (await env.ok("GET", "/v1/mailboxes/joe@example.com"))["max_size"] == SIZE_MAX


def test_parse_size_refuses_what_no_64_bit_field_holds() -> None:
    assert parse_size("8388607T") == 8388607 * 1024**4
    for bad in ("8388608T", "99999999999999999999T", 2**63, "9" * 5000):
        with pytest.raises(ValueError, match="too large"):
            parse_size(bad)
