"""The outbound IP pool: the host's own addresses come from its interfaces, never loopback or
link-local; an empty pool is said plainly instead of falling back to 127.0.0.1."""

from __future__ import annotations

from mailpolicy import config
from mailpolicy.core import outbound


def test_host_addresses_keep_only_routable_ones() -> None:
    found = ["127.0.0.1", "127.0.1.1", "169.254.3.4", "203.0.113.7", "192.0.2.2", "0.0.0.0"]
    assert outbound.host_addresses(found) == ("192.0.2.2", "203.0.113.7")
    assert outbound.host_addresses(["127.0.0.1", "169.254.1.1"]) == ()
    assert all(outbound.routable(a) for a in outbound.host_addresses())  # this host's, real


def test_pool_warnings() -> None:
    cfg = config.from_dict({})
    assert "no routable outbound address" in outbound.pool_warnings(cfg, ())[0]
    assert "outbound.ip_pool" in outbound.pool_warnings(cfg, ())[0]
    assert outbound.pool_warnings(cfg, ("203.0.113.7",)) == []
    assert "127.0.0.2" in outbound.pool_warnings(cfg, ("203.0.113.7", "127.0.0.2"))[0]


def test_configured_pool_wins() -> None:
    cfg = config.from_dict({"outbound": {"ip_pool": ["198.51.100.1"]}})
    assert outbound.pool(cfg) == ("198.51.100.1",)
