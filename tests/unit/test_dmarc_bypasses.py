"""Known DMARC bypasses in maddy / OpenDMARC / rspamd (research notes B1-B2), as tests of the
pure evaluator. DKIM and SPF bypasses with real signatures and DNS are in
tests/integration/test_dmarc_auth.py; header forgery in tests/integration/test_dmarc_step.py."""

from __future__ import annotations

from test_dmarc_treewalk import FakeDns

from mailpolicy.auth.dmarc import Identifier, author_domains, evaluate

BANK = {"_dmarc.bank.example": "v=DMARC1; p=reject",
        "_dmarc.evil.example": "v=DMARC1; p=none"}


async def run(from_values, spf=Identifier("none", ""), dkim=(), zone=BANK, hosts=None):
    dns = FakeDns(zone, hosts)
    return await evaluate(from_values, spf, list(dkim), dns.lookup, dns.exists)


async def test_cve_2019_16378_multi_address_from_cannot_borrow_another_domains_pass():
    # attacker signs for its own domain and lists the victim as a second author
    r = await run(["a@evil.example, ceo@bank.example"], dkim=[Identifier("pass", "evil.example")])
    assert (r.result, r.domain, r.disposition) == ("fail", "bank.example", "reject")


async def test_two_from_headers_are_evaluated_not_treated_as_no_dmarc_rspamd():
    r = await run(["a@evil.example", "ceo@bank.example"], dkim=[Identifier("pass", "evil.example")])
    assert (r.result, r.disposition) == ("fail", "reject")


async def test_cve_2020_12272_comment_trick_in_from_domain():
    r = await run(["ceo@bank.example(.evil.example"], dkim=[Identifier("pass", "evil.example")])
    assert (r.domain, r.disposition) == ("bank.example", "reject")


def test_address_parser_disagreement_evaluates_every_domain_either_parser_sees():
    doms, _ = author_domains(["alice@evil.example)<ceo@bank.example>"])
    assert "bank.example" in doms
    doms, _ = author_domains(["Evil <a@evil.example> <ceo@bank.example>"])
    assert {"evil.example", "bank.example"} <= set(doms)


def test_display_name_address_is_not_an_author_domain():
    doms, err = author_domains(['"ceo@bank.example" <a@evil.example>'])
    assert doms == ["evil.example"] and not err


async def test_opendmarc_54_subdomain_inherits_org_policy_without_psl():
    r = await run(["x@mail.bank.example"], hosts={"mail.bank.example"})
    assert (r.record_domain, r.disposition) == ("bank.example", "reject")


async def test_opendmarc_43_sp_reject_fails_subdomains():
    zone = {"_dmarc.bank.example": "v=DMARC1; p=none; sp=reject"}
    r = await run(["x@sub.bank.example"], zone=zone, hosts={"sub.bank.example"})
    assert r.disposition == "reject"


async def test_nonexistent_subdomain_spoof_gets_np():
    zone = {"_dmarc.bank.example": "v=DMARC1; p=none; np=reject"}
    r = await run(["x@does-not-exist.bank.example"], zone=zone)
    assert r.disposition == "reject"


async def test_rspamd_two_records_are_discarded_not_permerror_and_walk_continues():
    zone = {"_dmarc.mail.bank.example": ["v=DMARC1; p=none", "v=DMARC1; p=none"],
            "_dmarc.bank.example": "v=DMARC1; p=reject"}
    r = await run(["x@mail.bank.example"], zone=zone, hosts={"mail.bank.example"})
    assert (r.result, r.disposition) == ("fail", "reject")


async def test_opendmarc_pct_unsampled_reject_is_not_none():
    zone = {"_dmarc.bank.example": "v=DMARC1; p=reject; pct=1"}
    r = await run(["x@bank.example"], zone=zone)
    assert r.disposition == "reject"


async def test_record_after_garbage_txt_still_found():
    zone = {"_dmarc.bank.example": ["garbage", "v=DMARC1; p=reject"]}
    assert (await run(["x@bank.example"], zone=zone)).disposition == "reject"


async def test_spf_pass_for_unrelated_domain_does_not_pass_dmarc():
    r = await run(["x@bank.example"], spf=Identifier("pass", "evil.example"))
    assert r.result == "fail"


async def test_dkim_pass_of_parent_psd_does_not_align_across_public_suffix():
    zone = {"_dmarc.example": "v=DMARC1; p=reject; psd=y",
            "_dmarc.bank.example": "v=DMARC1; p=reject"}
    r = await run(["x@bank.example"], dkim=[Identifier("pass", "evil.example")], zone=zone)
    assert r.result == "fail"


def test_simple_from_fast_path_agrees_with_the_full_parsers():
    for value, expected in [("a@bank.example", ["bank.example"]),
                            ("Alice <a@bank.example>", ["bank.example"]),
                            ('"Alice, CEO" <a@bank.example>', ["bank.example"]),
                            ("=?utf-8?q?B=C3=A4nk?= <a@bank.example>", ["bank.example"]),
                            ("Alice <a@evil.example>, <b@bank.example>",
                             ["evil.example", "bank.example"]),
                            ("a@bank.example (comment) <b@evil.example>", None)]:
        doms, _ = author_domains([value])
        if expected is not None:
            assert doms == expected, value
        else:  # anything unusual goes to both parsers: every domain either one sees
            assert {"bank.example", "evil.example"} <= set(doms), value
