"""RFC 9989 §4.10 DNS tree walk: policy discovery and Organizational Domain, bounded queries."""

from __future__ import annotations

from mailpolicy.auth import dmarc as dm


class FakeDns:
    """TXT answers for `_dmarc.` names from a dict; records every query. A value of "TEMP" is a
    temporary failure; names absent are NXDOMAIN; `hosts` is the set of existing domains."""

    def __init__(self, zone: dict[str, object], hosts: set[str] | None = None) -> None:
        self.zone = zone
        self.hosts = hosts or set()
        self.queries: list[str] = []

    async def lookup(self, name: str) -> dm.Txt:
        self.queries.append(name)
        v = self.zone.get(name)
        if v == "TEMP":
            return dm.Txt("temperror")
        if v is None:
            return dm.Txt("nxdomain")
        return dm.Txt("ok", tuple(v) if isinstance(v, list) else (v,))

    async def exists(self, domain: str) -> bool | None:
        if domain in self.hosts:
            return True
        return None if "TEMP" in self.hosts else False


async def test_walk_targets_short_name_drops_one_label_at_a_time():
    assert dm.walk_targets("a.mail.example.com") == [
        "a.mail.example.com", "mail.example.com", "example.com", "com"]


def test_walk_targets_long_name_jumps_to_seven_labels_and_stops_at_eight_queries():
    name = ".".join(f"l{i}" for i in range(12)) + ".example.com"  # 14 labels
    t = dm.walk_targets(name)
    assert len(t) == 8
    assert t[0] == name
    assert t[1].count(".") == 6  # 7 labels
    assert t[-1] == "com"


def test_walk_targets_eight_labels_jumps_to_seven():
    name = "a.b.c.d.e.f.example.com"  # 8 labels
    t = dm.walk_targets(name)
    assert t[1] == "b.c.d.e.f.example.com" and len(t) == 8


async def test_discovery_record_at_author_domain_is_used():
    dns = FakeDns({"_dmarc.example.com": "v=DMARC1; p=reject"})
    d = await dm.discover_policy("example.com", dns.lookup)
    assert d.status == "found" and d.at == "example.com" and d.record.p == "reject"
    assert dns.queries == ["_dmarc.example.com"]


async def test_discovery_walks_up_to_parent_record():
    dns = FakeDns({"_dmarc.example.com": "v=DMARC1; p=quarantine"})
    d = await dm.discover_policy("a.b.example.com", dns.lookup)
    assert d.at == "example.com"
    assert dns.queries == ["_dmarc.a.b.example.com", "_dmarc.b.example.com", "_dmarc.example.com"]


async def test_discovery_multiple_records_at_one_name_are_discarded_and_walk_continues():
    dns = FakeDns({"_dmarc.mail.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
                   "_dmarc.example.com": "v=DMARC1; p=quarantine"})
    d = await dm.discover_policy("mail.example.com", dns.lookup)
    assert d.at == "example.com" and d.record.p == "quarantine"


async def test_discovery_non_dmarc_txt_records_are_ignored():
    dns = FakeDns({"_dmarc.example.com": ["some-verification=123", "v=DMARC1; p=reject"]})
    d = await dm.discover_policy("example.com", dns.lookup)
    assert d.status == "found" and d.record.p == "reject"


async def test_discovery_none_when_no_record_anywhere():
    dns = FakeDns({})
    d = await dm.discover_policy("x.example.com", dns.lookup)
    assert d.status == "none"
    assert len(dns.queries) == 3


async def test_discovery_temporary_failure_is_temperror():
    dns = FakeDns({"_dmarc.x.example.com": "TEMP"})
    assert (await dm.discover_policy("x.example.com", dns.lookup)).status == "temperror"


async def test_discovery_query_count_is_bounded_by_eight():
    name = ".".join(f"l{i}" for i in range(30)) + ".example.com"
    dns = FakeDns({})
    await dm.discover_policy(name, dns.lookup)
    assert len(dns.queries) == 8


async def test_org_domain_is_record_with_fewest_labels():
    dns = FakeDns({"_dmarc.mail.example.com": "v=DMARC1; p=none",
                   "_dmarc.example.com": "v=DMARC1; p=reject"})
    assert await dm.organizational_domain("a.mail.example.com", dns.lookup) == "example.com"


async def test_org_domain_psd_n_stops_the_walk():
    dns = FakeDns({"_dmarc.dept.example.com": "v=DMARC1; p=none; psd=n",
                   "_dmarc.example.com": "v=DMARC1; p=reject"})
    assert await dm.organizational_domain("a.dept.example.com", dns.lookup) == "dept.example.com"


async def test_org_domain_psd_y_makes_the_label_below_the_org_domain():
    dns = FakeDns({"_dmarc.gov.example": "v=DMARC1; p=reject; psd=y"})
    assert await dm.organizational_domain("mail.agency.gov.example", dns.lookup) \
        == "agency.gov.example"


async def test_org_domain_psd_y_at_the_start_domain_is_ignored():
    dns = FakeDns({"_dmarc.gov.example": "v=DMARC1; p=reject; psd=y"})
    assert await dm.organizational_domain("gov.example", dns.lookup) == "gov.example"


async def test_org_domain_without_records_is_the_domain_itself():
    assert await dm.organizational_domain("a.b.example.com", FakeDns({}).lookup) \
        == "a.b.example.com"


async def test_org_domain_temperror_is_none():
    dns = FakeDns({"_dmarc.b.example.com": "TEMP"})
    assert await dm.organizational_domain("a.b.example.com", dns.lookup) is None
