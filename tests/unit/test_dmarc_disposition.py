"""DMARC result and disposition (RFC 9989 §4.10.1, §5.3): p/sp/np, t=y, pass/fail/none/temperror/
permerror, and the multi-From "strictest failing wins" rule."""

from __future__ import annotations

from test_dmarc_treewalk import FakeDns

from mailpolicy.auth.dmarc import Identifier, evaluate

NONE_SPF = Identifier("none", "")


async def run(zone, from_values, spf=NONE_SPF, dkim=(), hosts=None):
    dns = FakeDns(zone, hosts)
    return await evaluate(from_values, spf, list(dkim), dns.lookup, dns.exists)


REJECT = {"_dmarc.example.com": "v=DMARC1; p=reject"}


async def test_pass_by_aligned_dkim():
    r = await run(REJECT, ["a@example.com"], dkim=[Identifier("pass", "example.com")])
    assert (r.result, r.disposition, r.dkim_aligned, r.policy) == ("pass", "none", True, "reject")


async def test_pass_by_aligned_spf():
    r = await run(REJECT, ["a@example.com"], spf=Identifier("pass", "bounce.example.com"))
    assert r.result == "pass" and r.spf_aligned


async def test_fail_when_spf_passes_but_is_not_aligned():
    r = await run(REJECT, ["a@example.com"], spf=Identifier("pass", "example.net"))
    assert (r.result, r.disposition) == ("fail", "reject")


async def test_fail_when_dkim_fails_even_if_aligned():
    r = await run(REJECT, ["a@example.com"], dkim=[Identifier("fail", "example.com")])
    assert r.result == "fail"


async def test_strict_dkim_alignment_rejects_subdomain_signature():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject; adkim=s"}
    r = await run(zone, ["a@example.com"], dkim=[Identifier("pass", "mail.example.com")])
    assert r.result == "fail"


async def test_strict_spf_alignment_rejects_subdomain_mailfrom():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject; aspf=s"}
    r = await run(zone, ["a@example.com"], spf=Identifier("pass", "bounce.example.com"))
    assert r.result == "fail"


async def test_none_without_record():
    r = await run({}, ["a@nodmarc.example"])
    assert (r.result, r.disposition) == ("none", "none")


async def test_p_none_fail_has_disposition_none():
    r = await run({"_dmarc.example.com": "v=DMARC1; p=none"}, ["a@example.com"])
    assert (r.result, r.policy, r.disposition) == ("fail", "none", "none")


async def test_quarantine_policy():
    r = await run({"_dmarc.example.com": "v=DMARC1; p=quarantine"}, ["a@example.com"])
    assert (r.result, r.disposition) == ("fail", "quarantine")


async def test_sp_applies_to_existing_subdomain():
    zone = {"_dmarc.example.com": "v=DMARC1; p=none; sp=reject"}
    r = await run(zone, ["a@sub.example.com"], hosts={"sub.example.com"})
    assert (r.policy, r.disposition, r.record_domain) == ("reject", "reject", "example.com")


async def test_p_applies_to_subdomain_without_sp():
    r = await run(REJECT, ["a@sub.example.com"], hosts={"sub.example.com"})
    assert r.disposition == "reject"


async def test_p_not_sp_applies_at_author_domain():
    zone = {"_dmarc.example.com": "v=DMARC1; p=quarantine; sp=none"}
    assert (await run(zone, ["a@example.com"])).disposition == "quarantine"


async def test_np_applies_to_nonexistent_subdomain():
    zone = {"_dmarc.example.com": "v=DMARC1; p=none; sp=quarantine; np=reject"}
    r = await run(zone, ["a@nx.example.com"], hosts=set())
    assert (r.policy, r.disposition) == ("reject", "reject")


async def test_np_not_used_for_existing_subdomain():
    zone = {"_dmarc.example.com": "v=DMARC1; p=none; sp=quarantine; np=reject"}
    r = await run(zone, ["a@www.example.com"], hosts={"www.example.com"})
    assert r.policy == "quarantine"


async def test_np_absent_falls_back_to_sp_then_p():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject; sp=quarantine"}
    assert (await run(zone, ["a@nx.example.com"])).policy == "quarantine"
    assert (await run(REJECT, ["a@nx.example.com"])).policy == "reject"


async def test_t_y_downgrades_reject_to_quarantine():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject; t=y"}
    r = await run(zone, ["a@example.com"])
    assert (r.policy, r.disposition, r.test_mode) == ("reject", "quarantine", True)


async def test_t_y_downgrades_quarantine_to_none():
    zone = {"_dmarc.example.com": "v=DMARC1; p=quarantine; t=y"}
    assert (await run(zone, ["a@example.com"])).disposition == "none"


async def test_pct_is_historic_and_does_not_sample():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject; pct=10"}
    assert (await run(zone, ["a@example.com"])).disposition == "reject"


async def test_pct_zero_acts_as_test_mode():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject; pct=0"}
    assert (await run(zone, ["a@example.com"])).disposition == "quarantine"


async def test_missing_p_with_valid_rua_acts_as_p_none():
    zone = {"_dmarc.example.com": "v=DMARC1; rua=mailto:d@example.com"}
    r = await run(zone, ["a@example.com"])
    assert (r.result, r.policy, r.disposition) == ("fail", "none", "none")


async def test_missing_p_without_rua_is_permerror():
    zone = {"_dmarc.example.com": "v=DMARC1; sp=reject"}
    r = await run(zone, ["a@example.com"])
    assert (r.result, r.disposition) == ("permerror", "none")


async def test_dns_failure_during_discovery_is_temperror():
    r = await run({"_dmarc.example.com": "TEMP"}, ["a@example.com"])
    assert r.result == "temperror"


async def test_temperror_of_alignable_dkim_is_temperror_not_fail():
    r = await run(REJECT, ["a@example.com"], dkim=[Identifier("temperror", "example.com")])
    assert r.result == "temperror"


async def test_temperror_of_unalignable_spf_is_still_fail():
    r = await run(REJECT, ["a@example.com"], spf=Identifier("temperror", "other.example"))
    assert r.result == "fail"


async def test_no_from_header_is_fail_with_reason():
    r = await run(REJECT, [])
    assert r.result == "fail" and r.reason == "no From header"


async def test_from_without_domain_is_fail_with_reason():
    r = await run(REJECT, ["undisclosed-recipients:;"])
    assert r.result == "fail" and "without an address" in r.reason


async def test_from_domain_is_case_folded_and_idna_encoded():
    zone = {"_dmarc.xn--bcher-kva.example": "v=DMARC1; p=reject"}
    r = await run(zone, ["x@BÜCHER.example"])
    assert r.domain == "xn--bcher-kva.example" and r.disposition == "reject"
    r2 = await run(REJECT, ["x@EXAMPLE.COM"], dkim=[Identifier("pass", "example.com")])
    assert r2.result == "pass" and r2.domain == "example.com"


async def test_multiple_from_strictest_failing_result_wins():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject",
            "_dmarc.example.org": "v=DMARC1; p=quarantine"}
    r = await run(zone, ["a@example.org, b@example.com"])
    assert (r.domain, r.disposition) == ("example.com", "reject")
    assert set(r.domains) == {"example.org", "example.com"}


async def test_multiple_from_domains_each_must_pass():
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject",
            "_dmarc.example.org": "v=DMARC1; p=reject"}
    r = await run(zone, ["a@example.org, b@example.com"],
                  dkim=[Identifier("pass", "example.org")])
    assert (r.result, r.domain) == ("fail", "example.com")


async def test_too_many_from_domains_is_a_quarantine_fail():
    froms = [", ".join(f"a@d{i}.example" for i in range(12))]
    r = await run({}, froms)
    assert (r.result, r.disposition) == ("fail", "quarantine")
