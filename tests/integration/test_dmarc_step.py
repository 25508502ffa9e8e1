"""The `dmarc` filter step over a real Transaction, a real Store and a real DNS server: header,
forgery stripping, per-domain enforcement in both filter modes, trusted forwarders, bypasses."""

from __future__ import annotations

import pytest
from test_dkim_verify import make_key, message, sign
from test_dmarc_zoneserver import TIMEOUT, ZoneServer

from mailpolicy import config
from mailpolicy.auth.dns import Resolver
from mailpolicy.auth.step import QUARANTINE_HEADER, DmarcStep, authenticate
from mailpolicy.smtp.pipeline import Transaction, split_headers
from mailpolicy.store import Store

AUTHSERV = "mx.local.test"


@pytest.fixture(scope="module")
def bank_key():
    return make_key()


@pytest.fixture
async def dns_zone(bank_key):
    srv = await ZoneServer({
        "s1._domainkey.bank.example": [("TXT", bank_key[1])],
        "_dmarc.bank.example": [("TXT", "v=DMARC1; p=reject")],
        "bank.example": [("TXT", "v=spf1 ip4:192.0.2.10 -all"), ("A", "192.0.2.10")],
        "mail.bank.example": [("TXT", "v=spf1 ip4:192.0.2.10 -all"), ("A", "192.0.2.10")],
        "_dmarc.soft.example": [("TXT", "v=DMARC1; p=quarantine")],
        "evil.example": [("TXT", "v=spf1 +all")],
        "helo.evil.example": [("TXT", "v=spf1 +all")],
        "_dmarc.slow.example": [TIMEOUT],
    }).start()
    yield srv
    srv.close()


@pytest.fixture
async def store(tmp_path):
    st = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/mp.db")
    await st.create_domain("on.test", dmarc=True)
    await st.create_domain("off.test", dmarc=False)
    yield st
    await st.close()


def make_cfg(dns_zone, tmp_path, **dmarc):
    return config.from_dict({"dns": {"nameservers": [dns_zone.address], "timeout_seconds": 1.0},
                             "dmarc": {"authserv_id": AUTHSERV, **dmarc},
                             "paths": {"state_dir": str(tmp_path)}})


def tx_for(content: bytes, rcpts: list[str], mode: str = "after-queue", mail_from: str = "",
           addr: str = "203.0.113.5", helo: str = "helo.evil.example") -> Transaction:
    return Transaction(mail_from=mail_from, mail_options=[], rcpt_tos=list(rcpts),
                       xforward={"ADDR": addr, "HELO": helo}, content=content, mode=mode)


def out_headers(tx: Transaction) -> list[tuple[str, str]]:
    return [(h.name, h.value) for h in split_headers(tx.message_bytes())[0]]


async def test_step_aligned_dkim_passes_and_prepends_one_header(dns_zone, store, tmp_path,
                                                                bank_key):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(sign(message(), "bank.example", "s1", bank_key[0]), ["bob@on.test"],
                mail_from="alice@bank.example")
    assert await step(tx) is None
    hs = out_headers(tx)
    ar = [v for n, v in hs if n == "authentication-results"]
    assert len(ar) == 1 and ar[0].startswith(AUTHSERV + ";")
    assert "dmarc=pass (p=reject dis=none) header.from=bank.example" in ar[0]
    assert "dkim=pass header.d=bank.example" in ar[0]
    assert "spf=fail smtp.mailfrom=alice@bank.example" in ar[0]
    assert QUARANTINE_HEADER.lower() not in dict(hs)
    assert tx.message_bytes().endswith(b"\r\n\r\nHello.\r\n")  # body untouched


async def test_step_spoof_after_queue_is_quarantined_not_bounced(dns_zone, store, tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(message(), ["bob@on.test"], mail_from="x@evil.example")
    assert await step(tx) is None
    hs = dict(out_headers(tx))
    # the disposition applied: after-queue quarantines a p=reject failure (never a bounce)
    assert hs[QUARANTINE_HEADER.lower()] == (
        "dmarc=fail (p=reject dis=quarantine) header.from=bank.example")
    assert "dmarc=fail (p=reject dis=quarantine)" in hs["authentication-results"]


async def test_step_spoof_after_queue_discard_drops_only_enforced_recipients(dns_zone, store,
                                                                            tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path, after_queue_action="discard"), store)
    tx = tx_for(message(), ["bob@on.test", "carol@off.test"], mail_from="x@evil.example")
    assert await step(tx) is None
    assert tx.rcpt_tos == ["carol@off.test"]
    tx2 = tx_for(message(), ["bob@on.test"], mail_from="x@evil.example")
    reply = await step(tx2)
    assert reply.code == 250 and tx2.rcpt_tos == []


async def test_step_spoof_before_queue_is_refused_550_naming_the_domain(dns_zone, store,
                                                                        tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    reply = await step(tx_for(message(), ["bob@on.test"], mode="before-queue",
                              mail_from="x@evil.example"))
    assert (reply.code, reply.dsn) == (550, "5.7.1") and "bank.example" in reply.text


async def test_step_before_queue_quarantine_policy_marks_not_refuses(dns_zone, store, tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(message("a@soft.example"), ["bob@on.test"], mode="before-queue",
                mail_from="x@evil.example")
    assert await step(tx) is None
    assert "dis=quarantine" in dict(out_headers(tx))[QUARANTINE_HEADER.lower()]


async def test_step_domain_with_dmarc_off_gets_header_but_no_enforcement(dns_zone, store,
                                                                         tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(message(), ["carol@off.test"], mode="before-queue", mail_from="x@evil.example")
    assert await step(tx) is None
    hs = dict(out_headers(tx))
    assert "dmarc=fail" in hs["authentication-results"]
    assert QUARANTINE_HEADER.lower() not in hs


async def test_step_strips_forged_results_and_quarantine_marker(dns_zone, store, tmp_path,
                                                                bank_key):
    forged = (f"Authentication-Results: {AUTHSERV.upper()}; dmarc=pass header.from=bank.example"
              f"\r\nAuthentication-Results: other.example; dkim=pass\r\n"
              f"X-Mailpolicy-Quarantine: none\r\n").encode()
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(forged + sign(message(), "bank.example", "s1", bank_key[0]), ["bob@on.test"],
                mail_from="alice@bank.example")
    await step(tx)
    hs = out_headers(tx)
    ars = [v for n, v in hs if n == "authentication-results"]
    assert len(ars) == 2 and ars[1].startswith("other.example")
    assert not any(n == QUARANTINE_HEADER.lower() for n, _ in hs)


async def test_step_forged_quarantine_none_cannot_save_a_spoof(dns_zone, store, tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(b"X-Mailpolicy-Quarantine: none\r\n" + message(), ["bob@on.test"],
                mail_from="x@evil.example")
    await step(tx)
    qs = [v for n, v in out_headers(tx) if n == QUARANTINE_HEADER.lower()]
    assert qs == ["dmarc=fail (p=reject dis=quarantine) header.from=bank.example"]


async def test_step_trusted_forwarder_is_not_rejected(dns_zone, store, tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path, trusted_forwarders=["203.0.113.0/24"]), store)
    tx = tx_for(message(), ["bob@on.test"], mode="before-queue", mail_from="x@evil.example")
    assert await step(tx) is None
    ar = dict(out_headers(tx))["authentication-results"]
    assert "dmarc=fail (p=reject dis=none)" in ar  # what was applied: nothing
    assert tx.notes["dmarc_override"] == "trusted_forwarder"


async def test_step_temperror_accepts_by_default_and_defers_when_configured(dns_zone, store,
                                                                            tmp_path):
    step = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    tx = tx_for(message("a@slow.example"), ["bob@on.test"], mode="before-queue")
    assert await step(tx) is None
    assert "dmarc=temperror" in dict(out_headers(tx))["authentication-results"]
    step = DmarcStep(make_cfg(dns_zone, tmp_path, temperror_action="defer"), store)
    reply = await step(tx_for(message("a@slow.example"), ["bob@on.test"], mode="before-queue"))
    assert reply.code == 451 and reply.dsn.startswith("4.")


async def test_cve_2019_20790_helo_pass_never_stands_in_for_mail_from(dns_zone):
    # HELO helo.evil.example has SPF +all, MAIL FROM is the victim's domain (SPF fails)
    v = await authenticate(Resolver([dns_zone.address], timeout=1.0), message(),
                           ["alice@bank.example"], "alice@bank.example", "203.0.113.5",
                           "helo.evil.example")
    assert (v.spf.identity, v.spf.result) == ("mailfrom", "fail")
    assert v.dmarc.result == "fail"


async def test_null_sender_uses_postmaster_at_helo_for_spf(dns_zone):
    v = await authenticate(Resolver([dns_zone.address], timeout=1.0), message(),
                           ["alice@bank.example"], "", "192.0.2.10", "mail.bank.example")
    assert (v.spf.identity, v.spf.result, v.spf.sender) == ("helo", "pass",
                                                            "postmaster@mail.bank.example")
    assert v.dmarc.result == "pass" and v.dmarc.spf_aligned


async def test_no_forwarded_client_address_means_spf_none_never_loopback(dns_zone):
    v = await authenticate(Resolver([dns_zone.address], timeout=1.0), message(),
                           ["alice@bank.example"], "alice@bank.example", None, "x")
    assert v.spf.result == "none" and v.spf.reason == "no client address"


async def test_spf_aligned_pass_from_forwarded_ipv6_prefix_address(dns_zone):
    dns_zone.add("v6.bank.example", ("TXT", "v=spf1 ip6:2001:db8::/32 -all"))
    v = await authenticate(Resolver([dns_zone.address], timeout=1.0), message(),
                           ["alice@bank.example"], "b@v6.bank.example", "IPv6:2001:db8::5", "x")
    assert v.spf.result == "pass" and v.dmarc.result == "pass"


def arc_sealed(msg: bytes, pem: bytes, sealer: str = "list.example") -> bytes:
    import dkim

    ar = f"Authentication-Results: {sealer}; dmarc=pass header.from=bank.example\r\n".encode()
    msg = ar + msg
    return b"".join(dkim.arc_sign(msg, b"s1", sealer.encode(), pem, sealer.encode())) + msg


@pytest.fixture(scope="module")
def list_key():
    return make_key()


async def test_step_trusted_arc_sealer_is_not_rejected(dns_zone, store, tmp_path, list_key):
    dns_zone.add("s1._domainkey.list.example", ("TXT", list_key[1]))
    msg = arc_sealed(message(), list_key[0])
    trusting = DmarcStep(make_cfg(dns_zone, tmp_path, trusted_arc_sealers=["list.example"]),
                         store)
    tx = tx_for(msg, ["bob@on.test"], mode="before-queue", mail_from="x@list.example")
    assert await trusting(tx) is None
    ours = next(v for n, v in out_headers(tx) if n == "authentication-results")
    assert ours.startswith(AUTHSERV) and "dmarc=fail (p=reject dis=none)" in ours
    # the override is visible: arc=pass naming the sealer
    assert "arc=pass (trusted sealer list.example) header.ams-d=list.example" in ours
    assert tx.notes["dmarc_override"] == "arc:list.example"
    plain = DmarcStep(make_cfg(dns_zone, tmp_path), store)
    reply = await plain(tx_for(msg, ["bob@on.test"], mode="before-queue",
                               mail_from="x@list.example"))
    assert reply.code == 550


async def test_step_broken_or_untrusted_arc_chain_is_rejected(dns_zone, store, tmp_path,
                                                              list_key):
    dns_zone.add("s1._domainkey.list.example", ("TXT", list_key[1]))
    cfg = make_cfg(dns_zone, tmp_path, trusted_arc_sealers=["list.example"])
    tampered = arc_sealed(message(), list_key[0]).replace(b"Hello.", b"Pay me.")
    step = DmarcStep(cfg, store)
    reply = await step(tx_for(tampered, ["bob@on.test"], mode="before-queue",
                              mail_from="x@list.example"))
    assert reply.code == 550
    dns_zone.add("s1._domainkey.other.example", ("TXT", list_key[1]))
    other = arc_sealed(message(), list_key[0], "other.example")
    reply = await step(tx_for(other, ["bob@on.test"], mode="before-queue",
                              mail_from="x@other.example"))
    assert reply.code == 550


async def test_step_with_verification_worker_process(dns_zone, store, tmp_path, bank_key):
    step = DmarcStep(make_cfg(dns_zone, tmp_path, verify_processes=1), store)
    try:
        tx = tx_for(sign(message(), "bank.example", "s1", bank_key[0]), ["bob@on.test"],
                    mail_from="alice@bank.example")
        assert await step(tx) is None
        assert tx.notes["dmarc"].result == "pass"
    finally:
        step.close()
