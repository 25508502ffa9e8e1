"""The SRS domain must be fully qualified: from filter.srs_domain, else Postfix's myhostname,
else the host's FQDN; an unqualified one is refused naming the key to set."""

from __future__ import annotations

import pytest

from mailpolicy import config
from mailpolicy.core import srs


def test_configured_srs_domain_is_used_and_folded() -> None:
    cfg = config.from_dict({"filter": {"srs_domain": "MX.Example.COM"}})
    assert srs.srs_domain(cfg) == "mx.example.com"


def test_unset_on_an_unqualified_host_is_a_never_routable_name_with_a_warning(
        monkeypatch) -> None:
    monkeypatch.setattr(srs, "_DEFAULT", ["vm"])
    cfg = config.from_dict({})
    assert srs.srs_domain(cfg) == "vm.localhost"
    assert "set filter.srs_domain" in (srs.unqualified_default(cfg) or "")
    monkeypatch.setattr(srs, "_DEFAULT", ["mx.example.org"])
    assert srs.unqualified_default(cfg) is None


@pytest.mark.parametrize("name", ["vm", "localhost", "host.localdomain", "a.localhost"])
def test_unqualified_names_are_refused_with_the_key(name: str, monkeypatch) -> None:
    monkeypatch.setattr(srs, "_DEFAULT", [name or "vm"])
    cfg = config.from_dict({"filter": {"srs_domain": name}})
    with pytest.raises(config.ConfigError, match=r"^filter\.srs_domain: .*set filter\.srs_domain"):
        srs.srs_domain(cfg)


def test_default_is_postfix_myhostname(monkeypatch) -> None:
    monkeypatch.setattr(srs, "_DEFAULT", [])
    monkeypatch.setattr(srs, "postfix_myhostname", lambda: "mail.example.org")
    assert srs.srs_domain(config.from_dict({})) == "mail.example.org"
    monkeypatch.setattr(srs, "_DEFAULT", [])
    monkeypatch.setattr(srs, "postfix_myhostname", lambda: None)
    monkeypatch.setattr(srs, "host_fqdn", lambda: "box.example.net")
    assert srs.srs_domain(config.from_dict({})) == "box.example.net"
