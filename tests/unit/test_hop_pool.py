"""HopPool: idle next-hop connections kept between filter sessions, bounded and aged."""

from __future__ import annotations

from mailpolicy.smtp.reinject import HopPool


class Conn:
    """Stands in for an aiosmtplib.SMTP: only is_connected and close() are used."""

    def __init__(self) -> None:
        self.is_connected = True

    def close(self) -> None:
        self.is_connected = False


def test_take_returns_the_last_given_for_that_next_hop_only() -> None:
    pool = HopPool()
    a, b = Conn(), Conn()
    assert pool.give("h", 1, a) and pool.give("h", 1, b)
    assert pool.take("h", 2) is None and pool.take("x", 1) is None
    assert pool.take("h", 1) is b and pool.take("h", 1) is a and pool.take("h", 1) is None


def test_bounded_and_never_keeps_a_closed_connection() -> None:
    pool = HopPool(max_idle=1)
    a, b, gone = Conn(), Conn(), Conn()
    gone.close()
    assert not pool.give("h", 1, gone)
    assert pool.give("h", 1, a) and not pool.give("h", 1, b)  # b: the caller says QUIT


def test_old_or_dropped_connections_are_closed_not_reused() -> None:
    now = [0.0]
    pool = HopPool(idle_seconds=30, clock=lambda: now[0])
    old, dropped = Conn(), Conn()
    pool.give("h", 1, old)
    pool.give("h", 1, dropped)
    dropped.is_connected = False  # the next hop closed it while it was idle
    now[0] = 31.0
    assert pool.take("h", 1) is None and not old.is_connected


def test_close_drops_everything() -> None:
    pool = HopPool()
    a = Conn()
    pool.give("h", 1, a)
    pool.close()
    assert not a.is_connected and pool.take("h", 1) is None
