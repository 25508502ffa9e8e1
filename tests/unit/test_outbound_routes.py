"""The route of mail mailpolicy sends itself: one rule (core.outbound.reinjection), the routed
listeners postfix-config emits for the pool, and the filter's envelopes per listener."""

from __future__ import annotations

import pytest

from mailpolicy import config
from mailpolicy.core import outbound
from mailpolicy.core.outbound import Reinjection, reinjection, routed_ports, transport_name
from mailpolicy.deploy import postfix as postfixconf
from mailpolicy.smtp.pipeline import Transaction
from mailpolicy.smtp.reinject import deliveries

PLAIN = 10026
ROUTED = {"192.0.2.10": 10100, "192.0.2.11": 10101}


def cfg_of(**sections: object) -> config.Config:
    return config.from_dict(sections)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the rule
def test_external_recipient_leaves_through_its_domains_routed_listener() -> None:
    assert reinjection(PLAIN, ROUTED, "192.0.2.11", external=True) == Reinjection(
        10101, "192.0.2.11")


def test_local_recipient_takes_the_plain_reinjection_whatever_the_domain_ip() -> None:
    assert reinjection(PLAIN, ROUTED, "192.0.2.11", external=False) == Reinjection(PLAIN)


@pytest.mark.parametrize(("ip", "why"), [("", "no outbound IP"),
                                         ("198.51.100.9", "not in this host's pool"),
                                         ("not-an-ip", "not in this host's pool")])
def test_domain_without_a_routed_address_takes_the_plain_path_and_says_why(
        ip: str, why: str) -> None:
    r = reinjection(PLAIN, ROUTED, ip, external=True)
    assert r.port == PLAIN and not r.outbound_ip and why in r.fallback


def test_address_forms_match_canonically() -> None:
    routed = routed_ports(cfg_of(), ["2001:db8::25"])
    assert reinjection(PLAIN, routed, "2001:0db8:0:0::25", True).port == 10100


# ---------------------------------------------------------------- the listeners' ports
def test_routed_ports_follow_the_sorted_pool_ipv4_first() -> None:
    ports = routed_ports(cfg_of(reinject={"routed_port_base": 12000}),
                         ["2001:db8::1", "192.0.2.11", "192.0.2.9", "192.0.2.11"])
    assert ports == {"192.0.2.9": 12000, "192.0.2.11": 12001, "2001:db8::1": 12002}


def test_routed_port_base_zero_means_no_routed_listeners() -> None:
    cfg = cfg_of(reinject={"routed_port_base": 0})
    assert routed_ports(cfg, ["192.0.2.10"]) == {}
    assert not any("content_filter=mpout-" in e
                   for e in postfixconf.master_cf(cfg, ["192.0.2.10"]))


def test_routed_port_on_another_listener_or_past_65535_is_refused() -> None:
    cfg = cfg_of(reinject={"routed_port_base": 10024})  # listen.lmtp's port
    with pytest.raises(config.ConfigError, match=r"reinject\.routed_port_base.*listen\.lmtp"):
        routed_ports(cfg, ["192.0.2.10"])
    cfg = cfg_of(reinject={"routed_port_base": 65535})
    with pytest.raises(config.ConfigError, match="65535"):
        routed_ports(cfg, ["192.0.2.10", "192.0.2.11"])
    with pytest.raises(config.ConfigError, match=r"reinject\.routed_port_base"):
        cfg_of(reinject={"routed_port_base": 70000})


def test_default_routed_ports_clash_with_no_default_port() -> None:
    cfg = cfg_of()
    taken = set(outbound._fixed_ports(cfg))
    ports = routed_ports(cfg, [f"192.0.2.{i}" for i in range(1, 200)])
    assert not taken & set(ports.values())


# ---------------------------------------------------------------- master.cf entries
def options(entry: str) -> dict[str, str]:
    out = {}
    for line in entry.splitlines()[1:]:
        name, _, value = line.strip().removeprefix("-o ").partition("=")
        out[name] = value
    return out


def test_one_routed_reinjection_smtpd_per_pool_address() -> None:
    cfg = cfg_of(reinject={"host": "127.0.0.1", "port": 11026, "routed_port_base": 11100})
    master = postfixconf.master_cf(cfg, ("192.0.2.11", "192.0.2.10"))
    by_name = {e.split(None, 1)[0]: e for e in master}
    plain = options(by_name["127.0.0.1:11026"])
    for ip, port in (("192.0.2.10", 11100), ("192.0.2.11", 11101)):
        entry = by_name[f"127.0.0.1:{port}"]
        head = entry.splitlines()[0].split()
        assert head[1:5] == ["inet", "n", "-", "n"] and head[-1] == "smtpd"
        opts = options(entry)
        # straight to the address's transport, with no next hop: the recipient domain's MX
        assert opts["content_filter"] == f"{transport_name(ip)}:"
        assert transport_name(ip) in by_name  # the transport it names exists
        # everything else exactly as the plain reinjection smtpd (FILTER_README overrides)
        assert {k: v for k, v in opts.items() if k not in ("content_filter", "syslog_name")} \
            == {k: v for k, v in plain.items() if k not in ("content_filter", "syslog_name")}
        assert opts["syslog_name"] == f"postfix/{transport_name(ip)}-reinject"


def test_routed_listeners_on_ipv6_reinjection_host_are_bracketed() -> None:
    cfg = cfg_of(reinject={"host": "::1", "port": 11026, "routed_port_base": 11100})
    master = postfixconf.master_cf(cfg, ("192.0.2.10",))
    entry = next(e for e in master if e.startswith("[::1]:11100 "))
    assert options(entry)["mynetworks"] == "[::1]/128"


def test_rendered_master_cf_comments_the_routed_listeners() -> None:
    text = postfixconf.render_master(cfg_of(), ("192.0.2.10",))
    assert "# routed reinjection smtpd:" in text
    before = text.split("127.0.0.1:10100", 1)[0]
    assert before.rstrip().splitlines()[-1].startswith("# through the transport")


# ---------------------------------------------------------------- the filter's envelopes
def test_deliveries_split_envelopes_by_listener_and_sender_in_order() -> None:
    srs = "SRS0=h=t=ext.test=s@fwd.test"
    tx = Transaction("s@ext.test", [], ["a@ours.test", "x@out.test", "y@far.test",
                                        "z@out.test"], {}, b"")
    tx.senders = {"x@out.test": srs, "y@far.test": srs, "z@out.test": srs}
    tx.notes["routes"] = {"x@out.test": 10101, "z@out.test": 10101}
    assert deliveries(tx, PLAIN) == [(PLAIN, "s@ext.test", ["a@ours.test"]),
                                     (10101, srs, ["x@out.test", "z@out.test"]),
                                     (PLAIN, srs, ["y@far.test"])]
    del tx.notes["routes"]  # no route step (e.g. a custom pipeline): the plain envelopes
    assert deliveries(tx, PLAIN) == [(PLAIN, s, r) for s, r in tx.envelopes()]


# ---------------------------------------------------------------- Routes over a directory
async def test_routes_over_a_directory_warn_once_per_domain() -> None:
    from memdir import MemoryDirectory

    from mailpolicy.core.model import Domain
    from mailpolicy.esmtp.route import Routes

    cfg = cfg_of(filter={"hostname": "mx.ours.test", "srs_domain": "srs.ours.test"},
                 reinject={"routed_port_base": 12000})
    routes = Routes(cfg, ("192.0.2.10",))
    d = MemoryDirectory([Domain("ours.test", outbound_ip="192.0.2.10"),
                         Domain("bare.test"), Domain("far.test", outbound_ip="198.51.100.1")],
                        [])
    assert await routes.target(d, "ours.test", "x@remote.test") == Reinjection(
        12000, "192.0.2.10")
    for local in ("y@bare.test", "root@mx.ours.test", "SRS0=a=b=c=d@srs.ours.test", "junk"):
        assert await routes.target(d, "ours.test", local) == Reinjection(cfg.reinject.port)
    for _ in range(2):
        r = await routes.target(d, "bare.test", "x@remote.test")
        assert r.port == cfg.reinject.port and r.fallback
        r = await routes.target(d, "far.test", "x@remote.test")
        assert r.port == cfg.reinject.port and "198.51.100.1" in r.fallback
    assert sorted(routes._warned) == ["bare.test", "far.test"]  # one warning each
